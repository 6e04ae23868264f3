"""The errors of cluster batches (all `SegdlError`s: the CLI makes them one line, exit 1)."""

from __future__ import annotations

from ..errors import SegdlError

__all__ = ["ClusterError", "DirectoryNotShared", "ShardBusy", "Superseded"]


class ClusterError(SegdlError):
    """The cluster cannot run the batch (no scheduler, no worker, a worker misconfigured)."""


class DirectoryNotShared(ClusterError):
    """A worker does not see the download directory the driver sees."""


class ShardBusy(ClusterError):
    """Another attempt of the same shard still holds it (a worker cut off, not yet dead)."""


class Superseded(ClusterError):
    """The run that submitted a task is over (stopped, or replaced by a newer run)."""
