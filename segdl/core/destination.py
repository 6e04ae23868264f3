"""The destination policy: where a file goes (`Target`), what stands at a path (`taken`),
what the if-exists policy makes of it (`settle`), and the free name next to it
(`free_name`). The single download and the batch both decide here."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DestinationError
from .naming import MAX_NAME_BYTES, derive_filename
from .probe import RemoteInfo
from .sink import CONTROL_SUFFIX, PART_SUFFIX, companions, destination_error

# Room for the companion files ("<name>.part", "<name>.segdl") within NAME_MAX: the longest
# name segdl gives a file it names itself.
NAME_ROOM = MAX_NAME_BYTES - max(len(PART_SUFFIX), len(CONTROL_SUFFIX))


def taken(path: Path) -> bool:
    """Whether anything (a file, a directory, a link, even a dangling one) stands at `path`."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # not ours to judge here: writing there will say what is wrong
    return True


def settle(final: Path, policy: str, reserve: Callable[[Path], bool] | None = None) -> Path | None:
    """The if-exists `policy` applied to `final`: the path to write (`final`, or a free name
    next to it for "rename"), or None to skip it. Raises DestinationError for a directory
    there, and for anything there under "error". "overwrite" keeps `final`: the commit's
    `os.replace` replaces a link there, never writes through it."""
    if not taken(final):
        return final
    if final.is_dir() and not final.is_symlink():
        raise DestinationError(f"{final} is a directory")
    if policy == "error":
        raise DestinationError(
            f"{final} already exists (use --overwrite, --if-exists skip or --if-exists rename)"
        )
    if policy == "skip":
        return None
    if policy == "rename":
        return free_name(final, reserve)
    return final


def free_name(path: Path, reserve: Callable[[Path], bool] | None = None) -> Path:
    """`name.1.ext`, `name.2.ext`, ...: the first name that is free, with its companions.

    `reserve`, when given, must also accept the name (a batch claims it there, so that two
    items renaming at once never pick the same one).
    """
    stem, dot, ext = path.name.rpartition(".")
    if not stem:
        stem, dot, ext = path.name, "", ""
    for i in range(1, 10000):
        candidate = path.with_name(f"{stem}.{i}{dot}{ext}")
        if taken(candidate) or any(taken(c) for c in companions(candidate)):
            continue
        if reserve is None or reserve(candidate):
            return candidate
    raise DestinationError(f"no free name next to {path}")


class Target:
    """Where the user asked one file to go: an exact file, or a directory (the file then takes
    the name the server's answer gives). Made with `Target.of`, which creates what is missing."""

    def __init__(self, file: Path | None, directory: Path | None) -> None:
        self.file = file
        self.directory = directory

    @classmethod
    def of(
        cls, dest: str | os.PathLike[str] | None, directory: str | os.PathLike[str] | None
    ) -> Target:
        """The target of a file path `dest` or a `directory` (default: the current one)."""
        if dest is not None:
            path = Path(dest)
            if path.is_dir():
                raise DestinationError(
                    f"{path} is a directory (give a file name, or use a directory)"
                )
            # Missing folders are created for a file as for a directory (as aria2c does).
            make_folder(path.parent)
            return cls(path, None)
        folder = Path(directory) if directory is not None else Path.cwd()
        make_folder(folder)
        return cls(None, folder)

    def path(self, info: RemoteInfo) -> Path:
        """The file's path, once the first answer (`info`) tells the remote's name."""
        if self.file is not None:
            return self.file
        assert self.directory is not None
        name = derive_filename(info.url, info.content_disposition, max_bytes=NAME_ROOM)
        return self.directory / name


def make_folder(folder: Path) -> None:
    """`folder` and its missing parents, created. Only what is missing is made, one mkdir
    each, and mkdir never follows a link at the name it creates: nothing is created through
    a link planted where a new folder goes (a dangling one is refused, not followed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        # The part of the path that stands in the way (a file, a dangling link).
        blocker = exc.filename or folder
        raise DestinationError(f"{blocker} exists and is not a directory") from None
    except OSError as exc:
        raise destination_error(exc, folder, "create directory") from None
    if not folder.is_dir():
        raise DestinationError(f"{folder} exists and is not a directory")
