"""Shards of a cluster batch: which shard an item goes to, the files under `DIR/.segdl/` that the
driver and the tasks share, and their formats. No Dask and no HTTP here.

Items are put in one of `GROUPS` groups by a stable hash (BLAKE2b) of the host of their first
URL, so that all items of one host are in one group; each group is cut, in input order, into
shards of `shard_size` items. A shard is named `g<group>-<seq>` (`g07-000012`): the same
manifest and `--shard-size` give the same shards on every run, which is what lets a re-run
skip the finished ones.

Layout (DIR is the download directory, which every worker sees)::

    DIR/.segdl/lock                     held by the driver (and by a local batch): one run per DIR
    DIR/.segdl/cluster/run              the current run's id; a task of another run stops
    DIR/.segdl/cluster/claims/<run>/    one link per destination claimed run-wide (SharedClaims)
    DIR/.segdl/cluster/trash/           claims of finished runs, deleted in the background
    DIR/.segdl/shards/<id>/items.jsonl  the shard's items, written by the driver
    DIR/.segdl/shards/<id>/task.lock    held by the attempt that runs the shard
    DIR/.segdl/shards/<id>/journal.sqlite3, lock   the shard's journal
    DIR/.segdl/shards/<id>/results.jsonl  rows of the attempt running now, appended
    DIR/.segdl/shards/<id>/done.jsonl   the commit marker: a summary line, then every row

`done.jsonl` is written last, in one rename: a shard whose marker exists (for the same items,
and without failures) is finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..batch.journal import try_lock_fd
from ..batch.manifest import Record
from ..core.urls import origin
from ..core.verify import Checksum
from ..errors import DestinationError

__all__ = ["GROUPS", "Row", "Shard", "ShardWriter", "SharedClaims", "host_group"]

GROUPS = 16  # hosts are spread over this many groups; part of every shard's name
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def host_group(url: str) -> int:
    """The group of the host of `url`: the same on every machine and every run (never
    Python's `hash()`, which is salted per process)."""
    scheme, host, port = origin(url)
    digest = hashlib.blake2b(f"{scheme}://{host}:{port}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % GROUPS


def segdl_dir(directory: Path) -> Path:
    return directory / ".segdl"


def cluster_dir(directory: Path) -> Path:
    return directory / ".segdl" / "cluster"


def run_file(directory: Path) -> Path:
    return cluster_dir(directory) / "run"


def claims_dir(directory: Path, run: str) -> Path:
    return cluster_dir(directory) / "claims" / run


def shard_dir(directory: Path, shard: str) -> Path:
    return directory / ".segdl" / "shards" / shard


def write_atomic(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write `path` whole through a temporary file and a rename (readers never see a part)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DestinationError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_text(path: Path) -> str | None:
    """The contents of a small text file, or None when there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as src:
            return src.read()
    except OSError:
        return None


# -- locks -------------------------------------------------------------------------------------


def try_lock(path: Path) -> int | None:
    """The descriptor of `path` locked exclusively (released by `os.close` or at the process's
    death), or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644)
    except OSError as exc:
        raise DestinationError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        locked = try_lock_fd(fd)
    except OSError as exc:  # e.g. ENOLCK on a network file system without locks
        os.close(fd)
        raise DestinationError(f"cannot lock {path}: {exc.strerror or exc}") from None
    if not locked:
        os.close(fd)
        return None
    return fd


# -- shard files -------------------------------------------------------------------------------


def _dumps(obj: object) -> str:
    # ASCII: a lone surrogate from an undecodable manifest byte survives the round trip.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def encode_record(record: Record) -> str:
    item: dict[str, Any] = {"i": record.index, "l": record.line, "u": list(record.urls)}
    if record.fields:
        item["f"] = dict(record.fields)
    if record.out is not None:
        item["o"] = record.out
    if record.dir is not None:
        item["d"] = record.dir
    if record.unit != "line":
        item["w"] = record.unit
    if record.checksum is not None:
        check = record.checksum
        item["c"] = [check.algorithm, check.hexdigest, check.source]
    return _dumps(item) + "\n"


def decode_record(line: str) -> Record:
    item = json.loads(line)
    return Record(
        index=int(item["i"]),
        line=int(item["l"]),
        urls=tuple(str(u) for u in item["u"]),
        fields={str(k): str(v) for k, v in item.get("f", {}).items()},
        out=item.get("o"),
        dir=item.get("d"),
        unit=item.get("w", "line"),
        checksum=Checksum(*map(str, item["c"])) if "c" in item else None,
    )


@dataclass(frozen=True)
class Shard:
    """A shard written by the driver."""

    id: str
    group: int
    items: int
    digest: str  # BLAKE2b of items.jsonl: ties a marker to exactly these items


class _Open:
    """The shard of one group being written."""

    def __init__(self, shard: str, group: int, folder: Path) -> None:
        self.id = shard
        self.group = group
        self.folder = folder
        self.final = folder / "items.jsonl"
        self.tmp = folder / f".items.jsonl.{os.getpid()}.tmp"
        self.file: IO[str] = open(  # noqa: SIM115 - closed in ShardWriter
            self.tmp, "w", encoding="ascii", newline="\n"
        )
        self.hasher = hashlib.blake2b(digest_size=16)
        self.count = 0


class ShardWriter:
    """Cuts a stream of records into shard files, one open shard per group at most.

    `add` returns the shard it closed (it reached `shard_size` items), `finish` the shards
    still open at the end of the input. Shard files are written through a temporary name and
    renamed when complete, so a task never reads a shard being written.
    """

    def __init__(self, directory: Path, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.directory = directory
        self.shard_size = shard_size
        self._open: dict[int, _Open] = {}
        self._next: dict[int, int] = {}

    def add(self, group: int, record: Record) -> Shard | None:
        current = self._open.get(group)
        if current is None:
            seq = self._next.get(group, 0)
            self._next[group] = seq + 1
            shard = f"g{group:02d}-{seq:06d}"
            folder = shard_dir(self.directory, shard)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                current = _Open(shard, group, folder)
            except OSError as exc:
                raise DestinationError(
                    f"cannot write the shard {folder}: {exc.strerror or exc}"
                ) from None
            self._open[group] = current
        line = encode_record(record)
        try:
            current.file.write(line)
        except OSError as exc:
            raise DestinationError(f"cannot write {current.tmp}: {exc.strerror or exc}") from None
        current.hasher.update(line.encode("ascii"))
        current.count += 1
        if current.count >= self.shard_size:
            return self._close(group)
        return None

    def _close(self, group: int) -> Shard:
        current = self._open.pop(group)
        try:
            current.file.close()
            os.replace(current.tmp, current.final)
        except OSError as exc:
            raise DestinationError(f"cannot write {current.final}: {exc.strerror or exc}") from None
        return Shard(current.id, group, current.count, current.hasher.hexdigest())

    def finish(self) -> list[Shard]:
        """Close the shards still open (the end of the input)."""
        return [self._close(group) for group in sorted(self._open)]

    def abort(self) -> None:
        """Drop the shards still open (the run stopped before the end of the input)."""
        for current in self._open.values():
            with contextlib.suppress(OSError):
                current.file.close()
            with contextlib.suppress(OSError):
                os.unlink(current.tmp)
        self._open.clear()


def read_shard(directory: Path, shard: str, digest: str) -> list[Record] | None:
    """The records of a shard, or None when its file is not the one `digest` names."""
    path = shard_dir(directory, shard) / "items.jsonl"
    hasher = hashlib.blake2b(digest_size=16)
    records: list[Record] = []
    with open(path, "rb") as src:
        for raw in src:
            hasher.update(raw)
            records.append(decode_record(raw.decode("ascii")))
    return records if hasher.hexdigest() == digest else None


def iter_shard_indexes(directory: Path, shard: str) -> Iterator[tuple[int, str]]:
    """(index, first URL) of every item of a shard, in order."""
    path = shard_dir(directory, shard) / "items.jsonl"
    with open(path, "rb") as src:
        for raw in src:
            item = json.loads(raw)
            yield int(item["i"]), str(item["u"][0])


# -- result rows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One item's result as a task reports it (paths relative to DIR, POSIX form)."""

    index: int
    url: str
    path: str | None
    status: str
    http_status: int | None = None
    size: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    # The engine's result, for an item fetched now:
    # (final_url, elapsed, connections, fetched, resumed, segmented, warnings)
    result: tuple[str, float, int, int, int, bool, tuple[str, ...]] | None = None


def encode_row(row: Row) -> str:
    return _dumps(
        [
            row.index,
            row.url,
            row.path,
            row.status,
            row.http_status,
            row.size,
            round(row.seconds, 6),
            row.attempts,
            row.error,
            None if row.result is None else [*row.result[:6], list(row.result[6])],
        ]
    )


def decode_row(line: str) -> Row:
    values = json.loads(line)
    index, url, path, status, http_status, size, seconds, attempts, error, result = values
    engine = None
    if result is not None:
        final_url, elapsed, connections, fetched, resumed, segmented, warnings = result
        engine = (
            str(final_url),
            float(elapsed),
            int(connections),
            int(fetched),
            int(resumed),
            bool(segmented),
            tuple(str(w) for w in warnings),
        )
    return Row(
        int(index),
        str(url),
        None if path is None else str(path),
        str(status),
        None if http_status is None else int(http_status),
        int(size),
        float(seconds),
        int(attempts),
        None if error is None else str(error),
        engine,
    )


def summarize(shard: Shard, rows: Iterable[Row], **extra: object) -> dict[str, Any]:
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    fetched = 0
    for row in rows:
        counts[row.status] += 1
        if row.result is not None:
            fetched += row.result[3]
    return {
        "shard": shard.id,
        "digest": shard.digest,
        "items": shard.items,
        **counts,
        "bytes": fetched,
        **extra,
    }


def write_marker(directory: Path, summary: Mapping[str, object], rows: Iterable[Row]) -> None:
    """The commit marker: the summary line and every row, in one rename, synced."""
    text = _dumps(dict(summary)) + "\n" + "".join(encode_row(row) + "\n" for row in rows)
    folder = shard_dir(directory, str(summary["shard"]))
    write_atomic(folder / "done.jsonl", text.encode("ascii"), sync=True)


def read_marker(directory: Path, shard: str) -> tuple[dict[str, Any], list[Row]] | None:
    """The summary and rows of a finished shard, or None when it has no (readable) marker."""
    path = shard_dir(directory, shard) / "done.jsonl"
    try:
        with open(path, encoding="ascii") as src:
            summary = json.loads(src.readline())
            rows = [decode_row(line) for line in src if line.strip()]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(summary, dict) or len(rows) != summary.get("items"):
        return None
    return summary, rows


def read_partial(directory: Path, shard: str) -> list[Row]:
    """The rows the last attempt of a shard logged before it died (a torn last line is
    dropped)."""
    path = shard_dir(directory, shard) / "results.jsonl"
    rows: list[Row] = []
    try:
        with open(path, encoding="ascii", errors="replace") as src:
            for line in src:
                if not line.endswith("\n"):
                    break
                with contextlib.suppress(ValueError, TypeError):
                    rows.append(decode_row(line))
    except OSError:
        pass
    return rows


def in_place(directory: Path, row: Row) -> bool:
    """Whether the file of an ok or skipped row is still there with its size."""
    if row.path is None:
        return row.status == "skipped"  # a duplicate named by its answer: nothing to check
    parts = PurePosixPath(row.path).parts
    if not parts or ".." in parts or PurePosixPath(row.path).is_absolute():
        return False
    try:
        st = os.lstat(directory.joinpath(*parts))
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == row.size


# -- run-wide claims ---------------------------------------------------------------------


class SharedClaims:
    """Destinations claimed across the whole run, by every shard on every worker (and by the
    driver, for the paths it settled before the first destination named by an answer).

    A claim is a symbolic link named by a hash of the path, whose target (never followed,
    only read) names the holder: creating a link is one system call that fails when the name
    exists, atomically on any POSIX file system, NFS included, and the holder is in it from
    the first instant.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def claim(self, relative: str, url: str, index: int) -> tuple[str, int] | None:
        """None when `relative` is ours now (or was already, from an earlier attempt of the
        same item), else (url, item) of the item that claimed it first."""
        digest = hashlib.blake2b(relative.encode("utf-8", "surrogatepass"), digest_size=16)
        name = digest.hexdigest()
        path = self.folder / name[:2] / name
        holder = f"{index}\n{_url_token(url)}"
        for _ in range(2):
            try:
                os.symlink(holder, path)
                return None
            except FileExistsError:
                return self._holder(path, url, index)
            except FileNotFoundError:  # the first claim in this fan-out folder
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DestinationError(f"cannot claim {relative}: {exc.strerror}") from None
            except OSError as exc:
                raise DestinationError(f"cannot claim {relative}: {exc.strerror}") from None
        raise DestinationError(f"cannot claim {relative}: its folder keeps disappearing")

    @staticmethod
    def _holder(path: Path, url: str, index: int) -> tuple[str, int] | None:
        try:
            owner, _, token = os.readlink(path).partition("\n")
            held = int(owner)
        except (OSError, ValueError) as exc:
            raise DestinationError(f"unreadable claim {path}: {exc}") from None
        if held == index:
            return None
        # A URL too long for a link's target is kept as its digest: compare in that form.
        return (url if token == _url_token(url) else token), held


def _url_token(url: str) -> str:
    if len(url) <= 2048:
        return url
    return "sha256:" + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
