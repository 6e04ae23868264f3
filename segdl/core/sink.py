"""The `.part` file: created without following links, preallocated, written at offsets, committed.

Workers write their bytes with positional writes, so there is no shared file position and no
lock around writes. Only `commit()` ever puts a file under the final name, with an atomic
`os.replace` in the destination's own directory.

On a local Linux file system, whole aligned blocks bypass the page cache
(`O_DIRECT`, through a second descriptor of the same open file): sixteen threads copying into
the page cache of one file contend for its inode lock, and on the benchmark VM that path fell
into a mode where 1 GiB took three times as long. Unaligned heads and tails, and every write
once the file system refuses `O_DIRECT`, go through the page cache as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path

from ..errors import DestinationError, DiskFullError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # shared with state: never open through a link
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
ALIGN = 4096  # offset, length and buffer alignment of a direct write: the largest common block
# Local file systems whose O_DIRECT writes are plain block writes. Network and FUSE file
# systems are left out: their O_DIRECT is uncached synchronous I/O, or refused.
_DIRECT_FS = frozenset({"ext4", "xfs", "btrfs", "f2fs"})
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


PART_SUFFIX = ".part"  # the bytes, until the final rename
CONTROL_SUFFIX = ".segdl"  # the control file that makes the bytes resumable


def companions(final: Path) -> tuple[Path, Path]:
    """The `.part` file and the control file that stand beside `final` while it downloads."""
    return final.with_name(final.name + PART_SUFFIX), final.with_name(final.name + CONTROL_SUFFIX)


def destination_error(exc: OSError, path: Path | str, doing: str) -> DestinationError:
    """A one-line error for a local file-system failure."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in _DISK_FULL:
        return DiskFullError(f"cannot {doing} {path}: {reason}")
    if exc.errno == errno.ELOOP:
        reason = "it is a symbolic link"
    return DestinationError(f"cannot {doing} {path}: {reason}")


def free_space(directory: Path) -> int:
    """Bytes available to us on the file system of `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


if hasattr(os, "pwrite"):

    def _pwrite(fd: int, data: memoryview, offset: int, _lock: threading.Lock) -> int:
        return os.pwrite(fd, data, offset)

else:  # pragma: no cover - platforms without pwrite (Windows) serialise seek+write

    def _pwrite(fd: int, data: memoryview, offset: int, _lock: threading.Lock) -> int:
        with _lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.write(fd, data)


def mount_fs_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The file system type of the mount holding `path` (the longest mount point prefix)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, fs_type = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        mount = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best:
            best, fs_type = len(mount), rest[0]
    return fs_type


def direct_io_suitable(path: Path) -> bool:
    """Whether whole blocks of the file at `path` should bypass the page cache.

    Only on Linux, on a local file system whose O_DIRECT is a plain block write: there, direct
    writes cost no copy and leave the page cache to the user's other files. (The disk's
    "rotational" flag is not asked: virtual disks report 1 whatever backs them.)
    """
    if not (_O_DIRECT and os.path.isdir("/proc/self/fd")):
        return False
    return mount_fs_type(path.parent) in _DIRECT_FS


class PartFile:
    """An open `.part` file that becomes `final` on commit."""

    def __init__(self, path: Path, final: Path, fd: int) -> None:
        self.path = path
        self.final = final
        self.fd = fd
        self.direct_fd = -1  # the same open file with O_DIRECT, open until close()
        self.direct = False  # whether write_blocks uses it (off for good after an EINVAL)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, final: Path) -> PartFile:
        """A new, empty `.part` file; whatever stood at `path` (ours, or a planted link) goes."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            # O_EXCL never opens what stands there, a link included: remove it and try again.
            try:
                os.unlink(path)
                fd = os.open(path, flags, 0o644)
            except OSError as exc:
                raise destination_error(exc, path, "replace") from None
        except OSError as exc:
            raise destination_error(exc, path, "create") from None
        return cls(path, final, fd)

    @classmethod
    def reopen(cls, path: Path, final: Path) -> PartFile | None:
        """The existing `.part` file to resume into, or None if there is no usable one."""
        try:
            fd = os.open(path, os.O_RDWR | NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a symlink planted at our path: never write through it
            raise destination_error(exc, path, "open") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return cls(path, final, fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def allocate(self, size: int) -> None:
        """Reserve `size` bytes so that a full disk shows now, not at 99%."""
        try:
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(self.fd, 0, size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
            if self.size() != size:
                os.ftruncate(self.fd, size)
        except OSError as exc:
            raise destination_error(exc, self.path, "allocate space for") from None

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise destination_error(exc, self.path, "truncate") from None

    def write_at(self, data: memoryview, offset: int) -> None:
        """Write all of `data` at `offset` (the only write primitive; safe from any thread)."""
        try:
            while data:
                written = _pwrite(self.fd, data, offset, self._lock)
                data = data[written:]
                offset += written
        except OSError as exc:
            raise destination_error(exc, self.path, "write") from None

    def enable_direct_io(self) -> bool:
        """Open the file again with O_DIRECT for `write_blocks`; False when refused.

        Reopening `/proc/self/fd/N` gives the very file already open, never whatever a path
        may point to by now.
        """
        if self.direct_fd >= 0 or not _O_DIRECT:
            return self.direct
        try:
            fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDWR | _O_DIRECT | _CLOEXEC)
        except OSError:
            return False
        if not os.path.samestat(os.fstat(fd), os.fstat(self.fd)):
            os.close(fd)
            return False
        self.direct_fd, self.direct = fd, True
        return True

    def write_blocks(self, data: memoryview, offset: int) -> None:
        """Write all of `data` at `offset`; whole aligned blocks directly when enabled.

        `data` must start at the start of a page-aligned buffer (an anonymous `mmap`). Its
        aligned part goes to the disk with O_DIRECT, the unaligned rest through the page
        cache. A file system that refuses a direct write after all (EINVAL) gets every later
        write through the page cache. (The descriptor stays open until `close()`: another worker
        may be writing through it at that very moment.)
        """
        length = len(data)
        if self.direct and offset % ALIGN == 0 and length >= ALIGN:
            whole = length - length % ALIGN
            try:
                done = 0
                while done < whole:
                    written = os.pwrite(self.direct_fd, data[done:whole], offset + done)
                    if written <= 0 or written % ALIGN:
                        done += max(written, 0)
                        break  # a short, unaligned direct write: the rest goes buffered
                    done += written
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise destination_error(exc, self.path, "write") from None
                self.direct = False
            else:
                data, offset = data[done:], offset + done
        self.write_at(data, offset)

    def sync(self) -> None:
        """Make the bytes written so far durable before a control file vouches for them."""
        try:
            (getattr(os, "fdatasync", None) or os.fsync)(self.fd)
        except OSError as exc:
            raise destination_error(exc, self.path, "sync") from None

    def read_at(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        self.direct = False
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def commit(self, *, sync: bool = True) -> None:
        """Rename the finished `.part` onto the final name, in the same directory; durably
        (data, then the directory entry) unless `sync` is False."""
        if sync:
            self.sync()
        self.close()
        try:
            os.replace(self.path, self.final)
        except OSError as exc:
            raise destination_error(exc, self.final, "rename the download to") from None
        if sync:
            sync_directory(self.final.parent)

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def sync_directory(directory: Path) -> None:
    """fsync a directory so that a rename in it survives a crash (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
