"""Batches: reading manifests as a stream of records, templates for destinations, the SQLite
journal of finished items, the per-item report, and the run (`run.py`) that fetches every item
over one scheduler with the file job. Requests are the file job's and the core's: nothing here
sends one itself."""
