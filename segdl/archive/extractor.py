"""One extraction from start to finish, whatever the format.

The format modules (`tarstream`, `zipread`) only turn an archive into `Entry` values and chunks of
bytes; `Extraction` puts each member through the safety rules (`safety`), writes it into the
staging tree (`staging`), checks every symbolic link once more against the finished tree, and
moves the tree into place. Used as a context manager, it leaves the destination untouched
unless `finish()` returned.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..core.sink import free_space
from ..errors import DestinationError, UnsafeArchiveError, UsageError
from .safety import (
    Budget,
    Limits,
    LinkEscape,
    Parts,
    dir_mode,
    file_mode,
    included,
    member_parts,
    normalize_patterns,
    refused,
    resolve_link,
)
from .staging import Overwrite, Staging

FILE = "file"
DIR = "directory"
SYMLINK = "symbolic link"
HARDLINK = "hard link"
_KINDS = frozenset({FILE, DIR, SYMLINK, HARDLINK})


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction put into `dest`."""

    format: str  # "zip", "tar", "tar.gz", "tar.bz2", "tar.xz" or "tar.zst"
    dest: Path
    members: int  # entries created: files, directories and links
    bytes_written: int  # bytes of file data
    skipped: int  # members left out by `include` or `strip_components`
    # The paths of the members created, relative to `dest` ("/"-separated), in archive order;
    # a path a later member replaced is listed once, where it first came.
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One member as its format describes it. `kind` is FILE, DIR, SYMLINK, HARDLINK, or the
    name of a special file type ("FIFO", "character device", ...), which is refused."""

    name: str
    kind: str
    mode: int = 0o644
    mtime: float | None = None
    size: int = 0  # declared size of a file's data
    link: str = ""  # a symbolic link's target, or the member name a hard link points to


class Extraction:
    """The rules and the staging tree of one extraction (see the module docstring)."""

    def __init__(
        self,
        dest: str | Path,
        *,
        format: str,
        limits: Limits | None,
        overwrite: Overwrite,
        strip_components: int,
        include: Sequence[str] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        if not isinstance(strip_components, int) or strip_components < 0:
            raise UsageError(f"strip_components must be 0 or more, not {strip_components!r}")
        self.format = format
        self.limits = limits if limits is not None else Limits()
        self.overwrite = overwrite
        self.strip = strip_components
        self.patterns = normalize_patterns(include)
        self.skipped = 0
        self.paths: dict[str, None] = {}  # an ordered set
        self._link_names: dict[Parts, str] = {}
        self.staging = Staging(Path(dest))
        try:
            max_size, rule = self.limits.max_size, "max_size"
            if max_size is None:
                with self.staging.translate("."):
                    max_size = free_space(self.staging.dest)
                rule = f"the free space of {self.staging.dest}"
            self.budget = Budget(self.limits, max_size, size_rule=rule, on_progress=on_progress)
        except BaseException:
            self.staging.close()
            raise

    def __enter__(self) -> Extraction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.staging.close()

    @property
    def dest(self) -> Path:
        return self.staging.dest

    def plan(self, entry: Entry) -> Parts | None:
        """Where a member goes in DIR, or None when it is left out; raises when it is refused.

        Every member is counted and its path checked, selected or not; the file type and the
        destination (an existing file of that name) only for those extracted.
        """
        self.budget.see(entry.name)
        parts = member_parts(entry.name)
        if not parts:
            if entry.kind == DIR:
                return None  # the archive's root directory, "./"
            raise refused(entry.name, "it has an empty name")
        if len(parts) <= self.strip or not included(parts, self.patterns):
            self.skipped += 1
            return None
        parts = parts[self.strip :]
        if entry.kind not in _KINDS:
            raise refused(entry.name, f"it is a {entry.kind} (special files are not extracted)")
        with self.staging.translate(entry.name):
            problem = self.staging.dest_conflict(parts, entry.kind == DIR, self.overwrite)
        if problem is not None:
            raise DestinationError(f"refused member {entry.name!r}: {problem}")
        return parts

    def _through_link(self, entry: Entry, parts: Parts, *, including_last: bool = False) -> None:
        symlinks = self.staging.symlinks
        if not symlinks:
            return
        for end in range(1, len(parts) + (1 if including_last else 0)):
            if parts[:end] in symlinks:
                link = "/".join(parts[:end])
                raise refused(
                    entry.name, f"its path goes through {link!r}, a symbolic link of the archive"
                )

    def add_dir(self, entry: Entry, parts: Parts) -> None:
        self._through_link(entry, parts)
        self.staging.make_dir(entry.name, parts, dir_mode(entry.mode), entry.mtime)
        self._created(parts)

    def add_file(
        self, entry: Entry, parts: Parts, chunks: Iterable[bytes], consumed: Callable[[], int]
    ) -> None:
        """Writes a regular file; `consumed()` tells the compressed bytes the member has used
        so far, for its ratio."""
        self._through_link(entry, parts)
        budget = self.budget
        budget.declare(entry.name, entry.size)
        budget.begin_member()

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                budget.output(entry.name, len(chunk), consumed())
                yield chunk

        self.staging.write_file(entry.name, parts, counted(), file_mode(entry.mode), entry.mtime)
        budget.end_member(consumed())
        self._created(parts)

    def add_symlink(self, entry: Entry, parts: Parts) -> None:
        """Creates a symbolic link whose target, resolved in the tree as built so far (and in
        DIR), stays inside DIR; `finish` checks them all again once the tree is complete."""
        self._through_link(entry, parts)
        target = entry.link
        if "\x00" in target:
            raise refused(entry.name, "its link target contains a NUL byte")
        self._check_target(entry.name, parts, target)
        self.staging.make_symlink(entry.name, parts, target.replace("\\", "/"), entry.mtime)
        self._link_names[parts] = entry.name
        self._created(parts)

    def _check_target(self, name: str, parts: Parts, target: str) -> None:
        try:
            resolve_link(parts[:-1], target, self.staging.link_at)
        except LinkEscape as exc:
            raise refused(name, f"symbolic link to {target!r}: {exc}") from None

    def add_hardlink(self, entry: Entry, parts: Parts) -> None:
        """Creates a hard link to a regular file extracted earlier from the same archive."""
        self._through_link(entry, parts)
        try:
            target = member_parts(entry.link)
        except UnsafeArchiveError:
            raise refused(
                entry.name, f"hard link to {entry.link!r}, a path outside the destination"
            ) from None
        if len(target) <= self.strip:
            raise refused(entry.name, f"hard link to {entry.link!r}, which was not extracted")
        target = target[self.strip :]
        if target == parts:
            raise refused(entry.name, "hard link to itself")
        self._through_link(entry, target, including_last=True)
        self.staging.make_hardlink(entry.name, parts, target, entry.link)
        self._created(parts)

    def _created(self, parts: Parts) -> None:
        self.paths.setdefault("/".join(parts))
        self.budget.created()

    def finish(self) -> ExtractResult:
        """Checks every symbolic link against the finished tree, sets directory modes, and
        moves the tree into DIR."""
        for parts, target in sorted(self.staging.symlinks.items(), key=operator.itemgetter(0)):
            self._check_target(self._link_names.get(parts, "/".join(parts)), parts, target)
        self.staging.finish_dirs()
        self.budget.tick(force=True)  # before the move: an exception it raises still aborts
        self.staging.commit(self.overwrite)
        return ExtractResult(
            format=self.format,
            dest=self.staging.dest,
            members=self.budget.extracted,
            bytes_written=self.budget.written,
            skipped=self.skipped,
            paths=tuple(self.paths),
        )
