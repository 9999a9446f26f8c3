"""11. Draft, review by a person, publish (see app.py)."""
