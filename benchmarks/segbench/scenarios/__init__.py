"""The scenarios, in run order. Each is one object; see base.Scenario for what it provides.

* single.py: one file per run: throttled (a), stragglers (b), unthrottled (c), memory (d),
  overhead (e) and noburst
* batch.py: lists of files: batch-small and batch-mixed
* batchlist.py: a very long list, measured while it starts: batch-list
* cluster.py: many small files, one process against a Dask LocalCluster: cluster
* stream.py: `segdl -o -` into a pipe (sha256sum, a throttled reader) against curl and a file
* archive.py: download and extract in one step: extract-tgz, extract-zip, extract-include
"""

from __future__ import annotations

from .archive import ExtractInclude, ExtractTgz, ExtractZip
from .base import Scenario
from .batch import BatchMixed, BatchSmall
from .batchlist import BatchList
from .cluster import Cluster
from .single import Memory, NoBurst, Overhead, Stragglers, Throttled, Unthrottled
from .stream import Stream

_ALL: list[Scenario] = [
    Throttled(),
    Stragglers(),
    Unthrottled(),
    Memory(),
    Overhead(),
    NoBurst(),
    BatchSmall(),
    BatchMixed(),
    BatchList(),
    Cluster(),
    Stream(),
    ExtractTgz(),
    ExtractZip(),
    ExtractInclude(),
]
SCENARIOS: dict[str, Scenario] = {sc.name: sc for sc in _ALL}
ALIASES: dict[str, str] = {sc.alias: sc.name for sc in _ALL if sc.alias}
GROUPS: dict[str, list[str]] = {
    "all": list(SCENARIOS),
    "batch": [sc.name for sc in _ALL if sc.name.startswith("batch-")],
    "extract": [sc.name for sc in _ALL if sc.name.startswith("extract-")],
}

__all__ = ["ALIASES", "GROUPS", "SCENARIOS", "Scenario"]
