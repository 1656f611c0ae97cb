"""The Registry's storage layer: its tables (tables.py), the reads and writes on them (queries.py)
and the in-memory index loaded from them (index.py). It imports nothing else of the Registry."""
