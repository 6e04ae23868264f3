"""The events of one transfer, as listeners receive them (silent by default).

Jobs never call a listener from a worker's hot loop: workers bump plain counters, and the
thread that drives the job samples them a few times a second and calls the listener. A batch
and an extraction have events of their own (`segdl.batch.results.BatchListener`,
`segdl.archive.remote.ExtractListener`), and `segdl.Listener` receives them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .verify import Checksum


@dataclass(frozen=True)
class StartInfo:
    """What is about to be downloaded."""

    url: str
    path: Path
    total: int | None  # None when the server does not say
    connections: int  # connections planned (1 for a single stream)
    resumed: int  # bytes already on disk from an earlier run
    # The HTTP version of the answer that sized the file ("HTTP/1.1", "HTTP/2"); None when
    # unknown.
    protocol: str | None = None


class TransferListener:
    """Receives the events of one transfer (a file, a stream, an archive); subclass and override
    what you need. All methods are no-ops."""

    def start(self, info: StartInfo) -> None:
        """The download is about to start (after the probe and resume check)."""

    def progress(self, done: int, total: int | None, connections: int) -> None:
        """`done` bytes of `total` are on disk; `connections` are active now."""

    def warning(self, message: str) -> None:
        """Something worth telling the user happened, but the download goes on."""

    def verifying(self, check: Checksum) -> None:
        """Every byte is in: the file is read again to compare its digest with `check` (the
        `checksum` option's, or the server's), which takes a while for a big file. Sent once
        per digest, before `finish`."""

    def finish(self, done: int) -> None:
        """The transfer ended (successfully or not); no more events follow for it."""
