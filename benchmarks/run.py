#!/usr/bin/env python3
"""Benchmark segdl against aria2c, axel, curl (and, for batches, wget2 and a ThreadPool script)
on real loopback HTTP servers.

Starts nginx (or a fallback Python throttling server) on 127.0.0.1 in a temporary directory,
generates random test files, runs every tool round-robin, verifies every download (sha256),
and writes results.json, results.md and (with matplotlib) PNG charts.

Run ``python benchmarks/run.py --help``; see benchmarks/README.md. The code is the package
benchmarks/segbench/ (start with its __init__.py). Standard library only; matplotlib is
optional and only used for the charts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
