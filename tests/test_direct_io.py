"""The write path: block-aligned direct writes, their fallbacks, and the buffer that feeds them.

Direct I/O depends on the file system under the test's temporary directory, so every test that
depends on it asserts what happens either way: direct writes where `direct_io_suitable` says
so, page-cache writes otherwise. The bytes on disk are always compared with what was written.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import payload
from rangeserver import RangeHTTPServer, serve_file

import segdl
from segdl import cli
from segdl.api import Listener
from segdl.core import sink
from segdl.core.job import Segment
from segdl.core.options import Options
from segdl.core.sink import ALIGN, PartFile
from segdl.errors import DiskFullError, NetworkError
from segdl.file import Engine

KIB = 1024
MIB = 1024 * 1024


def force_direct(part: PartFile) -> int:
    """Direct I/O on, or where the file system refuses it, a plain second descriptor in its
    place: the fallback logic under test is the same either way."""
    if not part.enable_direct_io():
        part.direct_fd, part.direct = os.dup(part.fd), True
    return part.direct_fd


def aligned(data: bytes) -> memoryview:
    """`data` at the start of a page-aligned buffer, as the engine's workers hold it."""
    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


@pytest.fixture
def part(tmp_path: Path) -> Iterator[PartFile]:
    p = PartFile.create(tmp_path / "f.bin.part", tmp_path / "f.bin")
    p.allocate(64 * KIB)
    yield p
    p.close()


class PwriteSpy:
    """Records which descriptor every `os.pwrite` of the sink went to; can fail some."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: dict[int, int] | None = None):
        self.calls: list[tuple[int, int, int]] = []  # (fd, offset, length)
        self.fail = fail or {}  # fd -> errno to raise
        self.short: set[int] = set()  # fds whose next write stops 100 bytes short
        real = os.pwrite

        def pwrite(fd: int, data: memoryview, offset: int) -> int:
            self.calls.append((fd, offset, len(data)))
            if fd in self.fail:
                raise OSError(self.fail[fd], os.strerror(self.fail[fd]))
            if fd in self.short and len(data) > 100:
                self.short.discard(fd)  # as if the kernel took all but the last 100 bytes
                return real(fd, data, offset) - 100
            return real(fd, data, offset)

        monkeypatch.setattr(sink.os, "pwrite", pwrite)

    def to(self, fd: int) -> list[tuple[int, int]]:
        return [(offset, length) for f, offset, length in self.calls if f == fd]


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 8 * KIB),  # whole blocks only
        (0, 8 * KIB + 100),  # whole blocks, then an unaligned tail
        (3 * ALIGN, ALIGN),  # one block further in
        (100, 5000),  # unaligned start: all through the page cache
        (0, 10),  # less than a block
    ],
)
def test_write_blocks_puts_the_same_bytes_either_way(
    part: PartFile, monkeypatch: pytest.MonkeyPatch, offset: int, length: int
) -> None:
    direct = part.enable_direct_io()
    spy = PwriteSpy(monkeypatch)
    data = payload(length)
    part.write_blocks(aligned(data), offset)
    assert os.pread(part.fd, length, offset) == data
    whole = length // ALIGN * ALIGN if offset % ALIGN == 0 else 0
    if direct:
        assert spy.to(part.direct_fd) == ([(offset, whole)] if whole else [])
        buffered = spy.to(part.fd)
        assert buffered == ([(offset + whole, length - whole)] if length > whole else [])
    else:
        assert part.direct_fd == -1 and not part.direct
        assert spy.to(part.fd) == [(offset, length)]


def test_direct_write_refused_falls_back_to_the_page_cache_for_good(
    part: PartFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct_fd = force_direct(part)
    spy = PwriteSpy(monkeypatch, fail={direct_fd: errno.EINVAL})
    first, second = payload(8 * KIB, seed=1), payload(8 * KIB, seed=2)
    part.write_blocks(aligned(first), 0)
    part.write_blocks(aligned(second), 8 * KIB)
    assert os.pread(part.fd, 16 * KIB, 0) == first + second
    assert not part.direct
    os.fstat(direct_fd)  # still open: another worker may be writing through it
    assert spy.to(direct_fd) == [(0, 8 * KIB)]  # tried once, never again
    assert spy.to(part.fd) == [(0, 8 * KIB), (8 * KIB, 8 * KIB)]


def test_short_direct_write_finishes_through_the_page_cache(
    part: PartFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_direct(part)
    spy = PwriteSpy(monkeypatch)
    spy.short.add(part.direct_fd)
    data = payload(8 * KIB)
    part.write_blocks(aligned(data), 0)
    assert os.pread(part.fd, 8 * KIB, 0) == data
    # The kernel took all but 100 bytes: not a whole number of blocks, so the rest is buffered.
    assert spy.to(part.fd) == [(8 * KIB - 100, 100)]


def test_disk_full_on_a_direct_write_is_a_disk_full_error(
    part: PartFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_direct(part)
    PwriteSpy(monkeypatch, fail={part.direct_fd: errno.ENOSPC})
    with pytest.raises(DiskFullError, match="No space left"):
        part.write_blocks(aligned(payload(8 * KIB)), 0)


def test_open_refused_leaves_direct_io_off(part: PartFile, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refuse_direct(path: str, flags: int, *args: int) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(sink.os, "open", refuse_direct)
    assert part.enable_direct_io() is False
    data = payload(8 * KIB)
    part.write_blocks(aligned(data), 0)
    assert os.pread(part.fd, 8 * KIB, 0) == data


def test_close_closes_both_descriptors(part: PartFile) -> None:
    direct = part.enable_direct_io()
    fds = [part.fd] + ([part.direct_fd] if direct else [])
    part.close()
    assert part.fd == -1 and part.direct_fd == -1 and not part.direct
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /mnt/net rw,relatime shared:2 - nfs4 server:/export rw
31 30 254:1 / /mnt/net/local rw shared:3 - xfs /dev/vdb rw
32 22 0:26 / /mnt/my\\040disk rw shared:4 - btrfs /dev/vdc rw
33 22 0:27 / /mnt/ne rw shared:5 - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "fs_type"),
    [
        ("/home/user/f", "ext4"),
        ("/mnt/net/f", "nfs4"),
        ("/mnt/net/local/f", "xfs"),  # the longest mount point wins
        ("/mnt/my disk/f", "btrfs"),  # \040 is a space in mountinfo
        ("/mnt/network/f", "ext4"),  # /mnt/net is not a prefix of /mnt/network
        ("/mnt/ne", "tmpfs"),
    ],
)
def testmount_fs_type(tmp_path: Path, path: str, fs_type: str) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert sink.mount_fs_type(Path(path), str(info)) == fs_type


def testmount_fs_type_unreadable(tmp_path: Path) -> None:
    assert sink.mount_fs_type(Path("/"), str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("fs_type", "expected"),
    [("ext4", True), ("xfs", True), ("nfs4", False), ("fuse.sshfs", False), (None, False)],
)
def test_direct_io_only_on_local_block_file_systems(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fs_type: str | None, expected: bool
) -> None:
    monkeypatch.setattr(sink, "mount_fs_type", lambda path: fs_type)
    assert sink.direct_io_suitable(tmp_path / "f") is (expected and bool(sink._O_DIRECT))


@pytest.mark.parametrize("direct_io", [True, False])
@pytest.mark.parametrize("size", [3 * MIB, 3 * MIB + 12_345, 40 * KIB + 1])
def test_download_with_and_without_direct_io(
    httpserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    direct_io: bool,
) -> None:
    data = payload(size)
    served = serve_file(httpserver, "/f.bin", data)
    opened: list[int] = []
    real_enable = PartFile.enable_direct_io

    def enable(self: PartFile) -> bool:
        ok = real_enable(self)
        opened.append(self.direct_fd)
        return ok

    monkeypatch.setattr(PartFile, "enable_direct_io", enable)
    spy = PwriteSpy(monkeypatch)
    segdl.download(
        served.url,
        tmp_path / "f.bin",
        connections=4,
        min_split=16 * KIB,
        buffer_size=256 * KIB,
        direct_io=direct_io,
    )
    assert (tmp_path / "f.bin").read_bytes() == data
    used = direct_io and sink.direct_io_suitable(tmp_path / "f.bin") and opened[0] >= 0
    direct_writes = spy.to(opened[0]) if opened else []
    if used:
        assert direct_writes
        assert all(o % ALIGN == 0 and n % ALIGN == 0 for o, n in direct_writes)
        # Ranges are planned on block boundaries, so most bytes go direct (a buffer written
        # early because it got old leaves an unaligned edge, which goes through the cache).
        assert sum(n for _, n in direct_writes) > size // 2
    else:
        assert not direct_writes
    assert not os.path.exists(tmp_path / "f.bin.part")


class FakeBody:
    """Hands out `chunks` of the data in turn, moving the fake clock on by `step` per read."""

    def __init__(self, data: bytes, chunk: int, clock: list[float], step: float) -> None:
        self.data, self.chunk, self.clock, self.step = data, chunk, clock, step
        self.at = 0
        self.fail_at: int | None = None

    def readinto(self, view: memoryview) -> int:
        if self.fail_at is not None and self.at >= self.fail_at:
            raise NetworkError("connection reset")
        n = min(len(view), self.chunk, len(self.data) - self.at)
        view[:n] = self.data[self.at : self.at + n]
        self.at += n
        self.clock[0] += self.step
        return n


class FakePart:
    def __init__(self, size: int) -> None:
        self.bytes = bytearray(size)
        self.writes: list[tuple[int, int]] = []

    def write_blocks(self, data: memoryview, offset: int) -> None:
        self.writes.append((offset, len(data)))
        self.bytes[offset : offset + len(data)] = data


def pump(
    start: int,
    data: bytes,
    *,
    chunk: int,
    step: float,
    buffer: int = 64 * KIB,
    fail_at: int | None = None,
) -> tuple[FakePart, Segment, Engine]:
    now = [0.0]
    engine = Engine(
        None,  # type: ignore[arg-type]  # the pump never touches the transport
        Options(buffer_size=buffer, save_interval=0.25),
        Listener(),
        clock=segdl.Clock(monotonic=lambda: now[0]),
    )
    body = FakeBody(data, chunk, now, step)
    body.fail_at = fail_at
    part = FakePart(start + len(data))
    seg = Segment(start, start, start + len(data))
    view = memoryview(mmap.mmap(-1, buffer))
    with contextlib.suppress(NetworkError):
        engine._pump(seg, body.readinto, view, part)
    return part, seg, engine


def test_pump_fills_the_buffer_before_writing() -> None:
    data = payload(200 * KIB)
    part, seg, engine = pump(0, data, chunk=10 * KIB, step=0.001)
    assert part.writes == [(0, 64 * KIB), (64 * KIB, 64 * KIB), (128 * KIB, 64 * KIB),
                           (192 * KIB, 8 * KIB)]  # fmt: skip
    assert bytes(part.bytes) == data and seg.pos == seg.stop
    assert engine._fetched == len(data)


def test_pump_writes_bytes_older_than_the_save_interval() -> None:
    # A slow connection: 1 KiB per 0.1 s never fills 64 KiB, yet each byte is written within
    # about one save interval (0.25 s) of its arrival.
    data = payload(10 * KIB)
    part, _, _ = pump(0, data, chunk=KIB, step=0.1)
    assert bytes(part.bytes) == data
    assert [n for _, n in part.writes] == [4 * KIB, 4 * KIB, 2 * KIB]


def test_pump_realigns_an_unaligned_start() -> None:
    data = payload(20 * KIB)
    part, _, _ = pump(100, data, chunk=3 * KIB, step=0.001)
    assert part.writes[0] == (100, ALIGN - 100)
    assert all(offset % ALIGN == 0 for offset, _ in part.writes[1:])
    assert bytes(part.bytes[100:]) == data


def test_pump_keeps_what_arrived_before_an_error() -> None:
    data = payload(50 * KIB)
    part, seg, engine = pump(0, data, chunk=4 * KIB, step=0.001, fail_at=20 * KIB)
    assert seg.pos == 20 * KIB == engine._fetched
    assert bytes(part.bytes[: seg.pos]) == data[: seg.pos]


@pytest.mark.parametrize("flag", [[], ["--no-direct-io"]])
def test_cli_no_direct_io(
    httpserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: list[str],
) -> None:
    data = payload(2 * MIB + 5)
    served = serve_file(httpserver, "/f.bin", data)
    asked: list[bool] = []
    real_enable = PartFile.enable_direct_io

    def enable(self: PartFile) -> bool:
        asked.append(True)
        return real_enable(self)

    monkeypatch.setattr(PartFile, "enable_direct_io", enable)
    monkeypatch.setattr(sink, "direct_io_suitable", lambda path: True)
    monkeypatch.setattr("segdl.file.direct_io_suitable", lambda path: True)
    code = cli.main([served.url, "-o", str(tmp_path / "f.bin"), "-n", "4", "-q", *flag])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "f.bin").read_bytes() == data
    assert asked == ([] if flag else [True])
