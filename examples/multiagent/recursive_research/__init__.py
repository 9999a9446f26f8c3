"""8. Recursive fan-out (see app.py)."""
