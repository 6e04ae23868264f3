"""The core every job is built on: it imports nothing above it (see segdl/__init__.py)."""
