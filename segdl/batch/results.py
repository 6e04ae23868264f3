"""What a batch tells its caller: one `ItemResult` per item, and the events of a `BatchListener`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.events import TransferListener
from ..file import Result


@dataclass(frozen=True)
class ItemResult:
    """What became of one item of a batch."""

    index: int  # position in the input, from 0
    url: str  # the URL (mirror) used, or the first one when none was tried
    path: Path | None  # where the file is (ok, skipped), or was to go
    status: str  # "ok", "skipped" or "failed"
    http_status: int | None = None
    size: int = 0  # bytes of the file (ok, skipped), or fetched before failing
    seconds: float = 0.0
    attempts: int = 0  # requests made for it
    error: str | None = None
    result: Result | None = None  # the engine's result, for an item fetched now
    protocol: str | None = None  # the HTTP version spoken (as `StartInfo.protocol`)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def relative_path(self, directory: Path) -> str | None:
        """The item's path relative to `directory` in POSIX form (as reports and shards
        record it), the whole path when it lies elsewhere, None when there is none."""
        if self.path is None:
            return None
        try:
            return self.path.relative_to(directory).as_posix()
        except ValueError:
            return self.path.as_posix()


class BatchListener(TransferListener):
    """Receives a batch's events. The transfer events are not sent for each item (only their
    warnings, naming the item); these are, from the caller's thread."""

    def item_done(self, result: ItemResult) -> None:
        """One item of a batch ended: ok, skipped or failed."""

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        """`items` of `total` (None until the input is read to its end) have ended, `failed` of
        them failed; `done` bytes were fetched; `connections` files are being fetched now."""
