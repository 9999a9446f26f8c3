"""9. Async functions (see app.py)."""
