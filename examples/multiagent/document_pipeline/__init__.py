"""4. Document processing pipeline (see app.py)."""
