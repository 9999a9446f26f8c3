"""5. Chaining parallel stages (see app.py)."""
