"""Batches on a Dask cluster: a manifest cut into shards by host, each shard run as a Dask task
with segdl's own batch engine, the files written into a directory every worker sees.

Importing this package imports neither Dask nor the driver (the command line stays quick to
start); `iter_download_cluster` imports Dask when called (`pip install 'segdl[dask]'`). See
`driver` (the segdl process), `task` (a shard on a worker) and `shards` (the files they share
under `DIR/.segdl/`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import iter_download_cluster
    from .client import check_address, connect, require_dask
    from .errors import ClusterError, DirectoryNotShared
    from .shards import host_group

__all__ = [
    "ClusterError",
    "DirectoryNotShared",
    "check_address",
    "connect",
    "host_group",
    "iter_download_cluster",
    "require_dask",
]

_WHERE = {
    "iter_download_cluster": "api",
    "check_address": "client",
    "connect": "client",
    "require_dask": "client",
    "ClusterError": "errors",
    "DirectoryNotShared": "errors",
    "host_group": "shards",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
