"""7. Different resources per agent (see app.py)."""
