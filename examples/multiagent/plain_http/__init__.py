"""10. Any framework inside a function (see app.py)."""
