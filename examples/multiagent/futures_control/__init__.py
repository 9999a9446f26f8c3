"""6. Futures for more control (see app.py)."""
