"""The rules every member must pass, whatever the format: paths, link targets, modes, limits.

Nothing here touches the disk: `staging` writes, and answers the questions about what exists
(`resolve_link` asks it through a `lookup` callable).
"""

from __future__ import annotations

import math
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..core.units import plural
from ..errors import ArchiveLimitError, UnsafeArchiveError, UsageError

MiB = 1 << 20
MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit: a longer chain of symbolic links is refused
PROGRESS_INTERVAL = 0.25  # seconds between two progress callbacks

_DRIVE = re.compile(r"[A-Za-z]:")

Parts = tuple[str, ...]


@dataclass(frozen=True)
class Limits:
    """Bomb limits, counted on the bytes actually decompressed, never on declared sizes.

    `max_size`: bytes of file data written in all (None: the free space of the destination's
    file system when extraction starts). `max_members`: members in the archive, counting those
    `include` and `strip_components` leave out. `max_ratio`: decompressed bytes per compressed
    byte, for each member and for the whole archive, once `ratio_grace` bytes were produced.
    """

    max_size: int | None = None
    max_members: int = 1_000_000
    max_ratio: float = 200.0
    ratio_grace: int = MiB

    def __post_init__(self) -> None:
        if self.max_size is not None and self.max_size < 0:
            raise UsageError(f"max_size must be at least 0, not {self.max_size}")
        if self.max_members < 1:
            raise UsageError(f"max_members must be at least 1, not {self.max_members}")
        if math.isnan(self.max_ratio) or self.max_ratio < 1:
            raise UsageError(f"max_ratio must be at least 1, not {self.max_ratio}")
        if self.ratio_grace < 0:
            raise UsageError(f"ratio_grace must be at least 0, not {self.ratio_grace}")


def refused(name: str, rule: str) -> UnsafeArchiveError:
    """The one-line error for a member that broke a safety rule."""
    return UnsafeArchiveError(f"refused member {name!r}: {rule}")


def member_parts(name: str) -> Parts:
    """The path components of a member name, or an `UnsafeArchiveError`.

    Backslashes count as separators; empty and `.` components are dropped; absolute paths,
    drive letters and `..` components are refused. The empty tuple means the root itself.
    """
    if "\x00" in name:
        raise refused(name, "its name contains a NUL byte")
    path = name.replace("\\", "/")
    if path.startswith("/"):
        raise refused(name, "absolute path")
    if _DRIVE.match(path):
        raise refused(name, "path with a drive letter")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise refused(name, "path with a '..' component")
    return parts


def normalize_patterns(include: Sequence[str] | None) -> tuple[str, ...] | None:
    """`include` patterns as matched: backslashes as slashes, no `./` prefix or trailing `/`."""
    if include is None:
        return None
    if isinstance(include, str):
        raise UsageError("include must be a list of patterns, not one string")
    patterns = []
    for pattern in include:
        if not isinstance(pattern, str) or not pattern.strip("/\\."):
            raise UsageError(f"include pattern {pattern!r} matches nothing useful")
        text = pattern.replace("\\", "/").strip("/")
        while text.startswith("./"):
            text = text[2:]
        patterns.append(text)
    return tuple(patterns)


def included(parts: Parts, patterns: tuple[str, ...] | None) -> bool:
    """Whether a member (path before stripping) is selected by `include`.

    As in tar, a pattern that matches a directory selects everything below it; `*` also
    matches `/`; matching is case-sensitive (`fnmatch.fnmatchcase`).
    """
    if patterns is None:
        return True
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        if any(fnmatchcase(prefix, pattern) for pattern in patterns):
            return True
    return False


def file_mode(mode: int) -> int:
    """The mode a regular file gets: owner read-write, at most 0o755 when the owner may run
    it and 0o644 otherwise; no setuid, setgid or sticky bit."""
    cap = 0o755 if mode & stat.S_IXUSR else 0o644
    return (mode | 0o600) & cap


def dir_mode(mode: int) -> int:
    """The mode a directory gets: at most 0o755, and always 0o700 for the owner (so the tree
    can be moved into place and removed again), no setuid, setgid or sticky bit."""
    return (mode & 0o755) | 0o700


class LinkEscape(Exception):
    """Internal: a link target leaves the destination (the message says how)."""


def resolve_link(directory: Parts, target: str, lookup: Callable[[Parts], str | None]) -> Parts:
    """Where a symbolic link in `directory` with `target` points, from the destination's root.

    Resolved as the kernel would in the finished tree, component by component: `lookup(path)`
    returns the target of a symbolic link at `path` (None for anything else or nothing), so
    links through links are followed and `..` applies after them. Components that do not exist
    are taken as directories. Raises `LinkEscape` when the path leaves the root, is absolute
    or loops.
    """
    todo = _components(target)
    todo.reverse()
    stack = list(directory)
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise LinkEscape("it points outside the destination")
            stack.pop()
            continue
        stack.append(part)
        link = lookup(tuple(stack))
        if link is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise LinkEscape("it is part of a loop of symbolic links")
        stack.pop()
        more = _components(link)
        more.reverse()
        todo.extend(more)
    return tuple(stack)


def _components(target: str) -> list[str]:
    """The components of a link target, refusing what is absolute anywhere."""
    path = target.replace("\\", "/")
    if not path:
        raise LinkEscape("its target is empty")
    if path.startswith("/") or _DRIVE.match(path):
        raise LinkEscape("it points to an absolute path")
    return path.split("/")


class Budget:
    """Counts members and bytes as they are produced and enforces the `Limits` on them.

    `output` is called before each chunk is written, with the compressed bytes the member has
    consumed so far, so a bomb stops within one chunk of its limit; the overall ratio is
    checked by the format (`overall`, `member_overall`). Progress callbacks are
    throttled to one every `PROGRESS_INTERVAL` seconds.
    """

    def __init__(
        self,
        limits: Limits,
        max_size: int,
        *,
        size_rule: str = "max_size",
        on_progress: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.max_size = max_size
        self.size_rule = size_rule
        self.seen = 0  # members met in the archive, extracted or not
        self.extracted = 0  # entries created: files, directories and links
        self.written = 0  # bytes of file data written
        self.member_out = 0
        self._done_in = 0  # compressed bytes of the members finished
        self._on_progress = on_progress
        self._clock = clock
        self._last = clock()

    def see(self, name: str) -> None:
        """Counts one more member of the archive."""
        self.seen += 1
        if self.seen > self.limits.max_members:
            raise ArchiveLimitError(
                f"refused member {name!r}: the archive has more than "
                f"{plural(self.limits.max_members, 'member')} (max_members)",
                rule="max_members",
            )

    def declare(self, name: str, size: int) -> None:
        """Refuses a member early when its declared size already breaks the size limit (the
        actual bytes are counted again as they come)."""
        if self.written + size > self.max_size:
            raise self._too_big(name)

    def ratio_exceeded(self, produced: int, consumed: int) -> bool:
        """Whether `produced` bytes out of `consumed` compressed ones break `max_ratio`."""
        limits = self.limits
        return produced > limits.ratio_grace and produced > limits.max_ratio * consumed

    def begin_member(self) -> None:
        self.member_out = 0

    def output(self, name: str, size: int, member_in: int) -> None:
        """Accounts for `size` more bytes of member `name` about to be written."""
        if self.written + size > self.max_size:
            raise self._too_big(name)
        self.member_out += size
        if self.ratio_exceeded(self.member_out, member_in):
            raise ArchiveLimitError(
                f"refused member {name!r}: it expands more than {self.limits.max_ratio:g} times "
                f"beyond its first {self.limits.ratio_grace} bytes (max_ratio)",
                rule="max_ratio",
            )
        self.written += size
        self.tick()

    def end_member(self, member_in: int) -> None:
        self._done_in += member_in

    def member_overall(self, name: str, size: int, member_in: int) -> None:
        """The overall ratio where each member's compressed bytes are known exactly (zip):
        the finished members' and this one's so far, `size` more bytes to come. (A tar stream
        checks its raw totals instead: read-ahead blurs where one member's bytes end.)"""
        self.overall(self._done_in + member_in, self.written + size, name)

    def overall(self, consumed: int, produced: int, name: str | None) -> None:
        """Checks the ratio of the whole archive so far."""
        if self.ratio_exceeded(produced, consumed):
            where = f" (at member {name!r})" if name is not None else ""
            raise ArchiveLimitError(
                f"refused archive{where}: it expands more than {self.limits.max_ratio:g} times "
                f"overall beyond its first {self.limits.ratio_grace} bytes (max_ratio)",
                rule="max_ratio",
            )

    def created(self) -> None:
        """Counts one more entry created."""
        self.extracted += 1
        self.tick()

    def tick(self, force: bool = False) -> None:
        if self._on_progress is None:
            return
        now = self._clock()
        if force or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._on_progress(self.extracted, self.written)

    def _too_big(self, name: str) -> ArchiveLimitError:
        return ArchiveLimitError(
            f"refused member {name!r}: the extracted data would exceed {self.max_size} bytes "
            f"({self.size_rule})",
            rule=self.size_rule,
        )
