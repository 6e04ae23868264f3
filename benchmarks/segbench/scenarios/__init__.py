"""The scenarios, in run order. Each is one object; see base.Scenario for what it provides.

* single.py: one file per run: throttled (a), stragglers (b), unthrottled (c), memory (d),
  overhead (e) and noburst
* batch.py: lists of files: batch-small and batch-mixed
* batchlist.py: a very long list, measured while it starts: batch-list
* cluster.py: many small files, one process against a Dask LocalCluster: cluster
* stream.py: `segdl -o -` into a pipe (sha256sum, a throttled reader) against curl and a file
* archive.py: download and extract in one step: extract-tgz, extract-zip, extract-include
* requests.py: request-heavy lists (issue 17): req-loopback, req-hosts (64 HTTPS hosts, a round
  trip) and req-h2 (one HTTPS host, HTTP/2); the Dask batch is cluster
"""

from __future__ import annotations

from .archive import ExtractInclude, ExtractTgz, ExtractZip
from .base import Scenario
from .batch import BatchMixed, BatchSmall
from .batchlist import BatchList
from .cluster import Cluster
from .requests import ReqH2, ReqHosts, ReqLoopback
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
    ReqLoopback(),
    ReqHosts(),
    ReqH2(),
]
SCENARIOS: dict[str, Scenario] = {sc.name: sc for sc in _ALL}
ALIASES: dict[str, str] = {sc.alias: sc.name for sc in _ALL if sc.alias}
GROUPS: dict[str, list[str]] = {
    "all": list(SCENARIOS),
    "batch": [sc.name for sc in _ALL if sc.name.startswith("batch-")],
    "extract": [sc.name for sc in _ALL if sc.name.startswith("extract-")],
    "requests": [sc.name for sc in _ALL if sc.name.startswith("req-")],
}

__all__ = ["ALIASES", "GROUPS", "SCENARIOS", "Scenario"]
