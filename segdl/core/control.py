"""The control file of one download as the engine keeps it: whether a partial file may be
resumed, what the control file vouches for, and when the data was last made durable.

`state` owns the file's format and its atomic saving; this module owns the policy: a partial
file is resumed only when the control file names the same URL, size and validators and the
bytes it trusts were synced; data is fsynced at most every couple of seconds, and the
durable view never counts a byte a sync may have missed. Of HTTP it knows only the
validators that identify a version of the file (a resume must be of the same version); it
knows nothing of threads or requests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DestinationError
from . import state
from .http.semantics import Validators
from .job import FileRanges, Segment
from .probe import RemoteInfo
from .sink import PartFile, companions

# Data is fsynced at most this often, and never so often that syncing takes over ~3% of the
# time: each sync forces to disk what would otherwise stay in the page cache. Between syncs the
# control file still records every written byte, which survives a crash of the process.
_SYNC_INTERVAL = 2.0
_SYNC_BUDGET = 30
_BOOT_ID = state.current_boot_id()  # read once: a batch makes a control per large file

Segments = tuple[tuple[int, int, int], ...]


class Control:
    """The control file at `path` beside one `.part` file."""

    def __init__(self, path: Path, monotonic: Callable[[], float]) -> None:
        self.path = path
        self._monotonic = monotonic
        self._boot_id = _BOOT_ID
        self._durable: Segments | None = None  # what the last sync made durable
        self._next_sync = 0.0

    def discard(self) -> None:
        state.discard(self.path)

    def start(self, job: FileRanges) -> None:
        """A fresh plan: nothing written yet, saved at once."""
        self._durable = tuple((s.start, s.start, s.stop) for s in job.segments)
        self.save(job, sync=False)

    def resume(
        self, info: RemoteInfo, final: Path, warn: Callable[[str], None]
    ) -> tuple[PartFile, list[Segment]] | None:
        """The `.part` file and its segments if this control file vouches for them, else None
        (with a warning when there was something to resume)."""
        assert info.size is not None
        part_path, control = companions(final)
        had_part = part_path.exists() or part_path.is_symlink()
        try:
            saved = state.load(control)
        except state.StateError as exc:
            if had_part or control.exists():
                warn(f"cannot resume ({exc}); starting from zero")
            return None
        reason = None
        if saved.url != info.url:
            reason = "the control file belongs to another URL"
        elif saved.size != info.size:
            reason = f"the remote size changed from {saved.size} to {info.size}"
        elif Validators(saved.etag, saved.last_modified).empty:
            reason = "the server gives no ETag or Last-Modified to check the partial file against"
        elif (saved.etag, saved.last_modified) != (
            info.validators.etag,
            info.validators.last_modified,
        ):
            reason = "the remote file changed since the partial download"
        if reason is None:
            part = PartFile.reopen(part_path, final)
            if part is None:
                reason = "the partial file is missing"
            elif part.size() != info.size:
                part.close()
                reason = "the partial file has the wrong size"
            else:
                trusted = saved.trusted_segments(self._boot_id)
                try:
                    part.sync()  # reports a write-back error that hit the bytes we trust
                except DestinationError as exc:
                    part.close()
                    reason = str(exc)
                else:
                    self._durable = trusted
                    self._next_sync = self._monotonic() + _SYNC_INTERVAL
                    return part, [Segment(a, d, b) for a, d, b in trusted]
        warn(f"cannot resume: {reason}; starting from zero")
        return None

    def save(self, job: FileRanges, *, sync: bool | None = None) -> None:
        """Save the control file; `sync` True flushes the data first, None does when it is due.

        The snapshot is taken before the flush, so the durable view never counts a byte the
        flush may have missed.
        """
        snapshot = merge(job.snapshot())
        now = self._monotonic()
        if sync is None:
            sync = self._boot_id is None or now >= self._next_sync
        if sync:
            job.part.sync()
            self._durable = snapshot
            spent = self._monotonic() - now
            self._next_sync = now + max(_SYNC_INTERVAL, _SYNC_BUDGET * spent)
        info = job.info
        assert info.size is not None
        state.save(
            self.path,
            state.State(
                url=info.url,
                size=info.size,
                etag=info.validators.etag,
                last_modified=info.validators.last_modified,
                segments=snapshot,
                durable=self._durable,
                boot_id=self._boot_id,
            ),
        )


def merge(segments: Segments) -> Segments:
    """Join finished neighbours so that the control file stays small however much was stolen."""
    merged: list[tuple[int, int, int]] = []
    for start, done, stop in segments:
        if merged:
            p_start, p_done, p_stop = merged[-1]
            if p_done == p_stop == start:
                merged[-1] = (p_start, done, stop)
                continue
        merged.append((start, done, stop))
    return tuple(merged)
