"""1. Fan-out and combine (see app.py)."""
