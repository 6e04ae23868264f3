"""Batches: reading manifests as a stream of records, templates for destinations, the SQLite
journal of finished items and the per-item report. Nothing here speaks HTTP."""
