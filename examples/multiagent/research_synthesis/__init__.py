"""2. Parallel research with synthesis (see app.py)."""
