"""The staging folder inside the destination, writes that cannot be redirected, and the final move.

Members are written into `DIR/.segdl-extract-XXXXXX/t/`, a tree that mirrors DIR, always through
directory file descriptors opened one component at a time with O_NOFOLLOW, and files created
with O_EXCL: a symbolic link in the tree, whoever made it, cannot redirect a write. Only
`commit` touches DIR itself: every conflict is found before anything moves, then each top-level
entry is renamed into DIR (or, where a directory already exists there, each entry below it), and
what `overwrite` replaces is first moved aside into `.../o/`. A failure or an interrupt during the
move puts everything back, so DIR is either untouched or complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TypeVar

from ..core.sink import destination_error
from ..errors import DestinationError, UnsupportedArchiveError
from .safety import Parts, refused

PREFIX = ".segdl-extract-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_T = TypeVar("_T")
# What an extraction may replace in DIR: everything (True), nothing (False), or only the paths
# listed (relative to DIR, "/"-separated): those an earlier extraction of the archive wrote.
Overwrite = bool | AbstractSet[str]


def replaces(overwrite: Overwrite, parts: Parts) -> bool:
    """Whether `overwrite` lets a member replace what stands at `parts` in DIR."""
    if isinstance(overwrite, bool):
        return overwrite
    return "/".join(parts) in overwrite


# What safe extraction needs: directory file descriptors and O_NOFOLLOW (POSIX, not Windows).
_NEEDED = (os.open, os.mkdir, os.stat, os.rename, os.symlink, os.link, os.unlink, os.readlink)
SUPPORTED = bool(_NOFOLLOW and _DIRECTORY) and all(f in os.supports_dir_fd for f in _NEEDED)


class Staging:
    """One extraction's staging tree inside `dest`; `close()` always, `commit()` on success."""

    def __init__(self, dest: Path) -> None:
        if not SUPPORTED:
            raise UnsupportedArchiveError(
                "extraction needs directory file descriptors and O_NOFOLLOW (a POSIX system)"
            )
        self.dest = Path(os.path.abspath(dest))
        self.symlinks: dict[Parts, str] = {}  # symbolic links created in the tree, by path
        self.dirs: dict[Parts, tuple[int, float | None]] = {}  # mode and mtime, set at the end
        self.box: Path | None = None
        self.dest_fd = self.box_fd = self.tree_fd = self._old_fd = -1
        self._made: list[Path] = []  # levels of dest that did not exist
        self._last: tuple[Parts, int] | None = None  # the last parent directory written to
        self._pair: tuple[Parts, int, int] | None = None  # the last parents of a move
        self._missing: Parts | None = None  # a path known not to exist in dest
        self._journal: list[tuple[Parts, str | None]] = []  # moves done, with their backup
        self._committed = False
        self._closed = False
        try:
            self._make_dest()
            self.dest_fd = os.open(self.dest, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
            self.box = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.dest))
            self.box_fd = os.open(self.box.name, _DIR_FLAGS, dir_fd=self.dest_fd)
            os.mkdir("t", 0o700, dir_fd=self.box_fd)
            self.tree_fd = os.open("t", _DIR_FLAGS, dir_fd=self.box_fd)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise destination_error(exc, self.dest, "extract into") from exc
            raise

    def _make_dest(self) -> None:
        missing: list[Path] = []
        path = self.dest
        while True:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                missing.append(path)
                if path.parent == path:
                    break
                path = path.parent
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise DestinationError(
                    f"cannot extract into {self.dest}: {path} is not a directory"
                )
            break
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            self._made.append(path)

    # -- writing the tree ------------------------------------------------------------------

    @contextlib.contextmanager
    def translate(self, name: str) -> Iterator[None]:
        """Turns an OSError of a write for member `name` into a refusal or a destination error."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a link, or a file
                problem = "its path goes through a symbolic link or a file of the archive"
                raise refused(name, problem) from exc
            raise destination_error(exc, self.dest, f"extract {name!r} into") from exc

    def _walk(self, root_fd: int, parts: Parts, *, create: bool = False) -> int:
        """A new descriptor of directory `parts` under `root_fd`, never following a link."""
        fd = os.dup(root_fd)
        try:
            for end, part in enumerate(parts, 1):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    self.dirs.setdefault(parts[:end], (0o755, None))
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, parts: Parts) -> int:
        """The (cached, not to be closed) descriptor of the tree directory holding `parts`."""
        parent = parts[:-1]
        if self._last is not None and self._last[0] == parent:
            return self._last[1]
        fd = self._walk(self.tree_fd, parent, create=True)
        self._forget_parent()
        self._last = (parent, fd)
        return fd

    def _forget_parent(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

    def _create(self, name: str, parts: Parts, make: Callable[[int], _T]) -> _T:
        """Runs `make(parent_fd)`; when the name is taken by an earlier member that is not a
        directory, removes that first (a later member replaces an earlier one, as in tar)."""
        pfd = self._parent(parts)
        try:
            return make(pfd)
        except FileExistsError:
            if stat.S_ISDIR(os.lstat(parts[-1], dir_fd=pfd).st_mode):
                raise refused(name, "it would replace a directory of an earlier member") from None
            os.unlink(parts[-1], dir_fd=pfd)
            self.symlinks.pop(parts, None)
            return make(pfd)

    def write_file(
        self, name: str, parts: Parts, chunks: Iterable[bytes], mode: int, mtime: float | None
    ) -> None:
        """Creates file `parts` from `chunks`; errors of the chunks' source pass unchanged."""
        with self.translate(name):
            fd = self._create(
                name, parts, lambda pfd: os.open(parts[-1], _FILE_FLAGS, 0o600, dir_fd=pfd)
            )
        try:
            for chunk in chunks:
                with self.translate(name):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            with self.translate(name):
                os.fchmod(fd, mode)
            _set_mtime(fd, mtime)
        finally:
            os.close(fd)

    def make_dir(self, name: str, parts: Parts, mode: int, mtime: float | None) -> None:
        with self.translate(name):
            pfd = self._parent(parts)
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=pfd)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(parts[-1], dir_fd=pfd).st_mode):
                    problem = "it would replace a file or link of an earlier member"
                    raise refused(name, problem) from None
        self.dirs[parts] = (mode, mtime)

    def make_symlink(self, name: str, parts: Parts, target: str, mtime: float | None) -> None:
        with self.translate(name):
            self._create(name, parts, lambda pfd: os.symlink(target, parts[-1], dir_fd=pfd))
        self.symlinks[parts] = target
        if mtime is not None:
            with contextlib.suppress(OSError, OverflowError, ValueError, NotImplementedError):
                os.utime(
                    parts[-1], (mtime, mtime), dir_fd=self._parent(parts), follow_symlinks=False
                )

    def make_hardlink(self, name: str, parts: Parts, target: Parts, link: str) -> None:
        """Links `parts` to `target`, which must be a regular file already in the tree."""
        missing = refused(name, f"hard link to {link!r}, which was not extracted before it")
        with self.translate(name):
            try:
                tfd = self._walk(self.tree_fd, target[:-1])
            except (FileNotFoundError, NotADirectoryError):
                raise missing from None
            try:
                try:
                    st = os.lstat(target[-1], dir_fd=tfd)
                except FileNotFoundError:
                    raise missing from None
                if not stat.S_ISREG(st.st_mode):
                    raise refused(name, f"hard link to {link!r}, which is not a regular file")
                self._create(
                    name,
                    parts,
                    lambda pfd: os.link(
                        target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False
                    ),
                )
            finally:
                os.close(tfd)

    def link_at(self, parts: Parts) -> str | None:
        """The target of a symbolic link at `parts` in the finished DIR (the tree over DIR's
        current contents), or None when there is no link there."""
        if parts in self.symlinks:
            return self.symlinks[parts]
        assert self.box is not None
        for root in (self.tree_fd, self.dest_fd):
            if root == self.dest_fd and parts[0] == self.box.name:
                return None
            try:
                fd = self._walk(root, parts[:-1])
            except OSError:
                continue
            try:
                mode = os.lstat(parts[-1], dir_fd=fd).st_mode
                return os.readlink(parts[-1], dir_fd=fd) if stat.S_ISLNK(mode) else None
            except OSError:
                continue
            finally:
                os.close(fd)
        return None

    def dest_conflict(self, parts: Parts, is_dir: bool, overwrite: Overwrite) -> str | None:
        """Why member `parts` cannot be moved into DIR, or None (checked early, per member; the
        same rules as `commit`, which checks again)."""
        missing = self._missing
        if missing is not None and parts[: len(missing)] == missing:
            return None
        assert self.box is not None
        if parts[0] == self.box.name:
            return "its name is taken by segdl's staging folder"
        fd = os.dup(self.dest_fd)
        try:
            for end, part in enumerate(parts, 1):
                try:
                    mode = os.lstat(part, dir_fd=fd).st_mode
                except FileNotFoundError:
                    self._missing = parts[:end]
                    return None
                here = self.dest.joinpath(*parts[:end])
                if stat.S_ISDIR(mode):
                    if end == len(parts):
                        return None if is_dir else f"{here} is a directory"
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = child
                    continue
                if replaces(overwrite, parts[:end]):
                    return None
                return f"{here} already exists (overwrite is off)"
            return None
        finally:
            os.close(fd)

    def finish_dirs(self) -> None:
        """Gives every directory of the tree its mode and mtime, deepest first."""
        self._forget_parent()
        for parts, (mode, mtime) in sorted(self.dirs.items(), key=lambda i: -len(i[0])):
            with self.translate("/".join(parts)):
                fd = self._walk(self.tree_fd, parts)
            try:
                with self.translate("/".join(parts)):
                    os.fchmod(fd, mode)
                _set_mtime(fd, mtime)
            finally:
                os.close(fd)

    # -- the final move --------------------------------------------------------------------

    def commit(self, overwrite: Overwrite) -> None:
        """Moves the tree into DIR: refuses every conflict first, then renames; puts
        everything back if anything fails (or is interrupted) before the last rename."""
        self._forget_parent()
        moves: list[tuple[Parts, bool]] = []
        conflicts: list[str] = []
        with self.translate("."):
            self._plan((), self.tree_fd, self.dest_fd, overwrite, moves, conflicts)
        if conflicts:
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise DestinationError(f"cannot extract into {self.dest}: {conflicts[0]}{more}")
        try:
            for parts, replace in moves:
                with self.translate("/".join(parts)):
                    self._move(parts, replace)
        finally:
            self._forget_parents()
        self._committed = True

    def _plan(
        self,
        parts: Parts,
        sfd: int,
        dfd: int,
        overwrite: Overwrite,
        moves: list[tuple[Parts, bool]],
        conflicts: list[str],
    ) -> None:
        for name in sorted(os.listdir(sfd)):
            here = (*parts, name)
            where = self.dest.joinpath(*here)
            source = os.lstat(name, dir_fd=sfd).st_mode
            try:
                target = os.lstat(name, dir_fd=dfd).st_mode
            except FileNotFoundError:
                moves.append((here, False))
                continue
            if stat.S_ISDIR(source) and stat.S_ISDIR(target):
                if self.box is not None and not parts and name == self.box.name:
                    conflicts.append(f"{where} is segdl's staging folder")
                    continue
                child_s = os.open(name, _DIR_FLAGS, dir_fd=sfd)
                try:
                    child_d = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                    try:
                        self._plan(here, child_s, child_d, overwrite, moves, conflicts)
                    finally:
                        os.close(child_d)
                finally:
                    os.close(child_s)
            elif stat.S_ISDIR(target):
                conflicts.append(f"{where} is a directory")
            elif replaces(overwrite, here):
                moves.append((here, True))
            else:
                conflicts.append(f"{where} already exists (overwrite is off)")

    def _parents(self, parent: Parts) -> tuple[int, int]:
        """Descriptors of `parent` in the tree and in DIR (cached for the next move)."""
        if self._pair is not None and self._pair[0] == parent:
            return self._pair[1], self._pair[2]
        self._forget_parents()
        sfd = self._walk(self.tree_fd, parent)
        try:
            dfd = self._walk(self.dest_fd, parent)
        except BaseException:
            os.close(sfd)
            raise
        self._pair = (parent, sfd, dfd)
        return sfd, dfd

    def _forget_parents(self) -> None:
        if self._pair is not None:
            os.close(self._pair[1])
            os.close(self._pair[2])
            self._pair = None

    def _move(self, parts: Parts, replace: bool) -> None:
        sfd, dfd = self._parents(parts[:-1])
        if replace:  # what is replaced is moved aside first, so it can come back
            if self._old_fd < 0:
                os.mkdir("o", 0o700, dir_fd=self.box_fd)
                self._old_fd = os.open("o", _DIR_FLAGS, dir_fd=self.box_fd)
            backup = str(len(self._journal))
            os.rename(parts[-1], backup, src_dir_fd=dfd, dst_dir_fd=self._old_fd)
            self._journal.append((parts, backup))
        os.rename(parts[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
        self._journal.append((parts, None))

    def _rollback(self) -> None:
        """Undoes the moves of an unfinished commit, newest first (best effort)."""
        while self._journal:
            parts, backup = self._journal.pop()
            with contextlib.suppress(OSError):
                dfd = self._walk(self.dest_fd, parts[:-1])
                try:
                    if backup is None:
                        sfd = self._walk(self.tree_fd, parts[:-1])
                        try:
                            os.rename(parts[-1], parts[-1], src_dir_fd=dfd, dst_dir_fd=sfd)
                        finally:
                            os.close(sfd)
                    else:
                        os.rename(backup, parts[-1], src_dir_fd=self._old_fd, dst_dir_fd=dfd)
                finally:
                    os.close(dfd)

    def close(self) -> None:
        """Ends the extraction: without a finished commit, DIR is put back as it was (and
        removed again if it was created); the staging folder is removed in every case."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._committed:
                self._rollback()
        finally:
            self._forget_parent()
            self._forget_parents()
            for fd in (self._old_fd, self.tree_fd, self.box_fd, self.dest_fd):
                if fd >= 0:
                    os.close(fd)
            if self.box is not None:
                shutil.rmtree(self.box, ignore_errors=True)
            if not self._committed:
                for path in reversed(self._made):
                    with contextlib.suppress(OSError):
                        os.rmdir(path)


def _set_mtime(fd: int, mtime: float | None) -> None:
    """Best effort: an archive's odd timestamp is no reason to fail."""
    if mtime is not None:
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(fd, (mtime, mtime))
