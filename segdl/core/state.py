"""The control file: which bytes of the `.part` file are written, for which remote file.

Saved atomically (temporary file, fsync, rename) and self-checked with a SHA-256 of its content,
so that a file truncated or zero-filled by a crash, or edited by hand, is detected and refused,
never trusted. It knows nothing of threads or HTTP.

It holds two views of progress. `segments` counts every byte whose write had completed: after
the process dies those bytes are still in the kernel's page cache, so they are trustworthy as
long as the kernel did not restart (same `boot_id`). `durable` counts only bytes that an fsync
had flushed before the save: after a power cut or a reboot, only those are trusted. Syncing
often is what makes a fast download slow, so the two are kept apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sink import NOFOLLOW, destination_error, sync_directory

FORMAT = "segdl-state"
VERSION = 2
_MAX_BYTES = 16 << 20  # a control file is small; anything bigger is not ours


class StateError(Exception):
    """The control file is missing, damaged, or describes another download (internal)."""


@dataclass(frozen=True)
class State:
    """A saved download: the remote it belongs to and `(start, done, stop)` per segment."""

    url: str
    size: int
    etag: str | None
    last_modified: str | None
    segments: tuple[tuple[int, int, int], ...]
    durable: tuple[tuple[int, int, int], ...] | None = None  # None: nothing synced yet
    boot_id: str | None = None  # the kernel boot `segments` is valid in

    @property
    def done_bytes(self) -> int:
        return sum(done - start for start, done, _ in self.segments)

    def trusted_segments(self, boot_id: str | None) -> tuple[tuple[int, int, int], ...]:
        """The progress to resume from: all written bytes if the kernel did not restart since,
        else only the synced ones (else nothing)."""
        if boot_id is not None and boot_id == self.boot_id:
            return self.segments
        if self.durable is not None:
            return self.durable
        return ((0, 0, self.size),)

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "version": VERSION,
            "url": self.url,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "segments": [list(s) for s in self.segments],
            "durable": None if self.durable is None else [list(s) for s in self.durable],
            "boot_id": self.boot_id,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        body["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> State:
        try:
            body: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise StateError(f"not a segdl control file ({exc.__class__.__name__})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise StateError("not a segdl control file")
        if body.get("version") != VERSION:
            raise StateError(f"unsupported control file version {body.get('version')!r}")
        claimed = body.pop("sha256", None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if claimed != hashlib.sha256(canonical.encode()).hexdigest():
            raise StateError("control file is damaged (checksum mismatch)")
        try:
            state = cls(
                url=_typed(body["url"], str),
                size=_typed(body["size"], int),
                etag=_optional(body.get("etag")),
                last_modified=_optional(body.get("last_modified")),
                segments=tuple(_segment(s) for s in body["segments"]),
                durable=None
                if body.get("durable") is None
                else tuple(_segment(s) for s in body["durable"]),
                boot_id=_optional(body.get("boot_id")),
            )
        except (KeyError, TypeError) as exc:
            raise StateError(f"control file is malformed ({exc})") from None
        state.validate()
        return state

    def validate(self) -> None:
        """Segments must tile `[0, size)` exactly, in order, with `start <= done <= stop`."""
        if self.size < 0:
            raise StateError("negative size in control file")
        durable = self.durable if self.durable is not None else ((0, 0, self.size),)
        for segments in (self.segments, durable):
            expected = 0
            for start, done, stop in segments:
                if start != expected or not start <= done <= stop:
                    raise StateError("control file segments do not tile the file")
                expected = stop
            if expected != self.size:
                raise StateError("control file segments do not cover the file")


def _typed(value: object, kind: type[Any]) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else _typed(value, str)


def _segment(value: object) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        raise TypeError("segment must be [start, done, stop]")
    start, done, stop = (_typed(v, int) for v in value)
    return start, done, stop


def current_boot_id() -> str | None:
    """An id of the running kernel boot (Linux), or None where there is none to read."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def load(path: Path) -> State:
    """Read and check a control file; raises StateError for anything untrustworthy."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except FileNotFoundError:
        raise StateError("no control file") from None
    except OSError as exc:
        raise StateError(f"cannot read control file: {os.strerror(exc.errno or 0)}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise StateError(f"cannot read control file: {exc}") from None
    if len(raw) > _MAX_BYTES:
        raise StateError("control file is too large")
    return State.from_bytes(raw)


def save(path: Path, state: State) -> None:
    """Atomically replace the control file at `path` with `state` (durable on return)."""
    write_atomically(path, state.to_bytes(), "save the control file")


def write_atomically(path: Path, data: bytes, doing: str) -> None:
    """Replace the file at `path` with `data` in one rename, durable on return; an error is a
    DestinationError "cannot {doing} {path}: ..."."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise destination_error(exc, path, doing) from None
    sync_directory(path.parent)


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
