"""3. Multi-perspective analysis (see app.py)."""
