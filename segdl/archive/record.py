"""The record a finished `segdl.extract` leaves in `DIR/.segdl/`, so that the same extraction run
again is a no-op while its members are in place.

One small JSON file per URL (`extract-<hash of the URL>.json`), replaced atomically after each
successful extraction: the URL, the selection (`include`, `strip_components`), the archive's
validators and size as the probe saw them, and each member path written with its type. A
record that cannot be read, or that is for another URL or selection, counts as none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.probe import RemoteInfo
from ..core.sink import destination_error
from ..core.state import write_atomically

VERSION = 1
_MAX_BYTES = 64 << 20  # a record of a million members is a few tens of MiB
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}


@dataclass(frozen=True)
class Record:
    """One finished extraction of `url` into a directory."""

    url: str
    include: tuple[str, ...] | None
    strip_components: int
    etag: str | None
    last_modified: str | None
    size: int | None
    format: str
    skipped: int
    members: int
    paths: tuple[tuple[str, str], ...]  # (path relative to DIR, "file" | "dir" | "link")
    archive: str | None = None  # where the archive was kept, if it was

    def same_archive(self, info: RemoteInfo) -> bool:
        """Whether the probe `info` describes the archive this record was made from."""
        validators = info.validators
        return (self.etag, self.last_modified, self.size) == (
            validators.etag,
            validators.last_modified,
            info.size,
        )

    def in_place(self, dest: Path) -> bool:
        """Whether every member path recorded is under `dest` with the type recorded."""
        for path, kind in self.paths:
            try:
                mode = os.lstat(dest / path).st_mode
            except (OSError, ValueError):
                return False
            if _KINDS.get(stat.S_IFMT(mode)) != kind:
                return False
        return True


def record_path(dest: Path, url: str) -> Path:
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return dest / ".segdl" / f"extract-{digest}.json"


def load(
    dest: Path, url: str, include: tuple[str, ...] | None, strip_components: int
) -> Record | None:
    """The record of `url` extracted into `dest` with this selection, or None."""
    try:
        with open(record_path(dest, url), "rb") as f:
            raw = json.loads(f.read(_MAX_BYTES))
        if raw.pop("version") != VERSION:
            return None
        raw["include"] = tuple(raw["include"]) if raw["include"] is not None else None
        raw["paths"] = tuple((str(p), str(k)) for p, k in raw["paths"])
        record = Record(**raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if (record.url, record.include, record.strip_components) != (url, include, strip_components):
        return None
    return record


def kinds(dest: Path, paths: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each of `paths` (relative to `dest`) with the type it has there now."""
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            kind = _KINDS.get(stat.S_IFMT(os.lstat(dest / path).st_mode))
            if kind is not None:
                found.append((path, kind))
    return tuple(found)


def save(dest: Path, record: Record) -> None:
    """Writes `record` into `dest/.segdl/` (atomically); raises a DestinationError."""
    path = record_path(dest, record.url)
    fields: dict[str, Any] = {"version": VERSION, **asdict(record)}
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise destination_error(exc, path.parent, "create directory") from exc
    write_atomically(path, json.dumps(fields).encode(), "record the extraction in")
