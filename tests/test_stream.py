"""Ordered streams (`segdl.open`, `segdl.fetch`) against the loopback range server.

Every test compares the bytes read with the served bytes and asserts on what the server saw
(its request log) or on what the engine reports (`max_buffered`, `hedges`), never on timing.
Waits are hang guards only: they bound a test that would otherwise never end.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import random
import shutil
import socket
import sys
import tarfile
import threading
import weakref
import zipfile
from collections.abc import Callable, Iterator

import pytest
from fakes import fast_clock, payload
from helpers import wait_for
from rangeserver import (
    Faults,
    RangeHTTPServer,
    RequestRecord,
    parse_range_header,
    pattern_bytes,
    serve_file,
)

import segdl

KiB = 1 << 10
MiB = 1 << 20
PIECE = 256 * KiB  # the smallest piece: what a small window is cut into
HANG_GUARD = 10.0  # seconds: a bound for waits that should end at once


# --- helpers --------------------------------------------------------------------------------


def open_stream(url: str, **kwargs: object) -> segdl.RemoteFile:
    """`segdl.open` with retry back-offs that take no time."""
    kwargs.setdefault("clock", fast_clock()[0])
    return segdl.open(url, **kwargs)  # type: ignore[arg-type]


def data_of(size: int, seed: int = 1) -> bytes:
    """Test content: `payload` (shifts show) when small, random bytes (fast) when large."""
    return payload(size, seed) if size <= 2 * MiB else pattern_bytes(size, seed)


def segdl_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("segdl-")}


def new_threads(baseline: set[threading.Thread]) -> list[str]:
    return sorted(t.name for t in segdl_threads() - baseline if t.is_alive())


def range_start(record: RequestRecord) -> int | None:
    if record.range_header is None:
        return None
    specs = parse_range_header(record.range_header)
    return None if not specs else specs[0][0]


def read_exact(f: io.RawIOBase, n: int) -> bytes:
    """`n` bytes (fewer only at the end): a raw read may return less than asked."""
    out = bytearray()
    while len(out) < n and (chunk := f.read(n - len(out))):
        out += chunk
    return bytes(out)


def read_n_loop(f: io.RawIOBase, n: int) -> bytes:
    out = bytearray()
    while chunk := f.read(n):
        out += chunk
    return bytes(out)


def readinto_loop(f: io.RawIOBase, size: int) -> bytes:
    out = bytearray()
    buf = bytearray(size)
    while n := f.readinto(buf):
        out += buf[:n]
    return bytes(out)


def copied(f: io.RawIOBase) -> bytes:
    sink = io.BytesIO()
    shutil.copyfileobj(f, sink)
    return sink.getvalue()


CONSUMERS: dict[str, Callable[[io.RawIOBase], bytes]] = {
    "read": lambda f: f.read(),
    "read_n": lambda f: read_n_loop(f, 65_537),
    "readinto": lambda f: readinto_loop(f, 100_003),
    "copyfileobj": copied,
}


# --- byte-exact output ----------------------------------------------------------------------


SIZES = [0, 1, 1_000_003, 3 * MiB + 17]  # empty, one byte, a prime, 12+ times the window


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_bytes_exact(rangeserver: RangeHTTPServer, size: int, consumer: str) -> None:
    data = data_of(size)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=3, window=256 * KiB) as f:
        assert f.size == size
        assert f.readable()
        assert CONSUMERS[consumer](f) == data
        assert f.read() == b""
        assert f.tell() == size
    if size == 0:
        assert served.gets() == []  # nothing to fetch after the probe


@pytest.mark.skipif(sys.version_info < (3, 11), reason="hashlib.file_digest is 3.11+")
@pytest.mark.parametrize("size", SIZES)
def test_file_digest(rangeserver: RangeHTTPServer, size: int) -> None:
    data = data_of(size, seed=3)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=3, window=256 * KiB) as f:
        digest = hashlib.file_digest(f, "sha256")  # type: ignore[arg-type]
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_each_piece_fetched_once_over_several_connections(rangeserver: RangeHTTPServer) -> None:
    """The pieces are aligned ranges, fetched in parallel, each once (plus hedges, if any)."""
    size = 3 * MiB + 5
    data = data_of(size, seed=4)
    served = serve_file(rangeserver, "/f.bin", data, Faults(rate=2 * MiB))
    with open_stream(served.url, connections=4, window=MiB) as f:
        assert f.read() == data
        piece, hedges = f.piece, f.hedges
    ranges = served.ranges_requested()
    expected = [(s, min(s + piece, size) - 1) for s in range(0, size, piece)]
    assert sorted(set(ranges)) == expected
    assert len(ranges) - len(expected) <= hedges
    assert served.max_in_flight >= 2  # several connections at once


def test_readinto_memoryview_and_odd_buffers(rangeserver: RangeHTTPServer) -> None:
    data = data_of(700_001, seed=5)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=2, window=256 * KiB) as f:
        assert f.readinto(bytearray(0)) == 0
        first = bytearray(7)
        assert f.readinto(memoryview(first)) == 7
        rest = readinto_loop(f, 4099)
    assert bytes(first) + rest == data


# --- memory bound and backpressure ----------------------------------------------------------


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "with-checksum"])
def test_slow_consumer_stays_within_the_window(
    rangeserver: RangeHTTPServer, checksum: bool
) -> None:
    """A reader far slower than the connections: memory stays within the window plus one
    piece per connection, and no range starts beyond the reader's position + window."""
    window, connections = MiB, 4
    size = 10 * window
    data = data_of(size, seed=6)
    served = serve_file(rangeserver, "/f.bin", data)
    holder: dict[str, segdl.RemoteFile] = {}
    seen: list[tuple[int, int]] = []  # (range start, reader position when it arrived)

    def hook(record: RequestRecord) -> None:
        start = range_start(record)
        f = holder.get("f")
        if record.method == "GET" and start is not None and f is not None and not f.closed:
            seen.append((start, f.tell()))

    served.request_hook = hook
    check = f"sha256={hashlib.sha256(data).hexdigest()}" if checksum else None
    with open_stream(served.url, connections=connections, window=window, checksum=check) as f:
        holder["f"] = f
        out = bytearray()
        while chunk := f.read(4 * KiB):  # small reads: the consumer is the slow side
            out += chunk
        bound = f.window + connections * f.piece
        max_buffered, piece, hedges = f.max_buffered, f.piece, f.hedges
    assert bytes(out) == data
    assert max_buffered <= bound, f"held {max_buffered} bytes, bound {bound}"
    beyond = [(start, pos) for start, pos in seen if start >= pos + window]
    assert beyond == [], f"ranges requested beyond position + window: {beyond[:5]}"
    ranges = served.ranges_requested()
    refetched = len(ranges) - len(set(ranges))
    assert refetched <= hedges, f"{refetched} pieces fetched twice, {hedges} hedges"
    assert served.bytes_sent() <= size + hedges * piece


# --- hedging --------------------------------------------------------------------------------


def test_straggler_at_the_head_is_hedged(rangeserver: RangeHTTPServer) -> None:
    """The first request of piece 0 crawls; an idle connection asks for piece 0 again, and
    that copy (answered at full speed) is the one read."""
    size = 4 * MiB
    data = data_of(size, seed=7)
    served = serve_file(rangeserver, "/f.bin", data, Faults(slow={0: 16 * KiB}))
    at_zero: list[RequestRecord] = []

    def hook(record: RequestRecord) -> None:
        if record.method == "GET" and range_start(record) == 0:
            at_zero.append(record)
            if len(at_zero) >= 2:
                served.faults.slow = {}  # only the first copy is slow

    served.request_hook = hook
    with open_stream(served.url, connections=4, window=2 * MiB) as f:
        assert f.read() == data
        piece, hedges = f.piece, f.hedges
    assert hedges >= 1
    head = [r for r in served.ranges_requested() if r == (0, piece - 1)]
    assert len(head) == 2, served.ranges_requested()
    assert len(at_zero) == 2


# --- faults mid-stream ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(drop_after=100_000, drop_first_k=3),
        Faults(drop_after=150_000),  # every answer breaks off: each piece in several requests
        Faults(fail_first=3, retry_after="0"),
        Faults(fail_first=2, fail_status=500),
    ],
    ids=["drop-first-3", "drop-every", "503-first-3", "500-first-2"],
)
def test_faults_mid_stream_recover(rangeserver: RangeHTTPServer, faults: Faults) -> None:
    size = 2 * MiB + 333
    data = data_of(size, seed=8)
    served = serve_file(rangeserver, "/f.bin", data, faults)
    with open_stream(served.url, connections=3, window=512 * KiB, retries=8) as f:
        assert read_n_loop(f, 50_000) == data
    gets = served.gets()
    if faults.drop_after is not None:
        broken = [r for r in gets if r.truncated]
        assert len(broken) >= (faults.drop_first_k or 2)
    else:
        assert sum(1 for r in gets if r.status == faults.fail_status) == faults.fail_first


def test_plain_stream_recovers_from_503(rangeserver: RangeHTTPServer) -> None:
    """A plain stream (no ranges) also gets through a 503 before its body starts."""
    data = data_of(300_000, seed=9)
    faults = Faults(
        ignore_range=True, head_status=405, status_sequence=[200, 503, 200], retry_after="0"
    )
    served = serve_file(rangeserver, "/f.bin", data, faults)
    # The probe (a GET of bytes=0-0) gets a 200: no ranges. The plain GET then gets a 503.
    with open_stream(served.url, connections=4) as f:
        assert f.read() == data
    assert [r.status for r in served.gets()] == [200, 503, 200]  # probe, stream, stream again


def test_remote_changing_mid_stream_fails_without_splicing(
    rangeserver: RangeHTTPServer,
) -> None:
    size = 4 * MiB
    data = data_of(size, seed=10)
    served = serve_file(rangeserver, "/f.bin", data, Faults(change_after_bytes=MiB))
    out = bytearray()
    with (
        pytest.raises(segdl.RemoteChangedError) as caught,
        open_stream(served.url, connections=3, window=256 * KiB) as f,
    ):
        while chunk := f.read(10_000):
            out += chunk
    assert isinstance(caught.value, segdl.SegdlError)
    assert len(out) < size
    assert bytes(out) == data[: len(out)]  # only bytes of the first version, in order


def test_checksum_checked_at_the_end(rangeserver: RangeHTTPServer) -> None:
    data = data_of(600_000, seed=11)
    served = serve_file(rangeserver, "/f.bin", data)
    good = f"sha256={hashlib.sha256(data).hexdigest()}"
    with open_stream(served.url, connections=2, window=256 * KiB, checksum=good) as f:
        assert f.read() == data
    bad = f"sha256={hashlib.sha256(b'other').hexdigest()}"
    out = bytearray()
    with (
        pytest.raises(segdl.IntegrityError),
        open_stream(served.url, connections=2, window=256 * KiB, checksum=bad) as f,
    ):
        while chunk := f.read(65_536):
            out += chunk
    assert bytes(out) == data  # every byte was handed on; the end says it was the wrong file


# --- standard consumers of file objects -----------------------------------------------------


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def test_tarfile_streaming(rangeserver: RangeHTTPServer) -> None:
    members = {
        "a.txt": b"hello\n" * 1000,
        "dir/random.bin": pattern_bytes(1_500_000, 12),
        "dir/empty": b"",
        "z.bin": pattern_bytes(700_000, 13),
    }
    archive = make_tar_gz(members)
    served = serve_file(rangeserver, "/a.tar.gz", archive)
    got: dict[str, bytes] = {}
    with (
        open_stream(served.url, connections=4, window=256 * KiB) as f,
        tarfile.open(fileobj=f, mode="r|*") as tar,
    ):
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            got[member.name] = extracted.read()
    assert got == members


def test_gzip_file(rangeserver: RangeHTTPServer) -> None:
    original = pattern_bytes(900_000, 14) + b"text " * 100_000
    served = serve_file(rangeserver, "/x.gz", gzip.compress(original, mtime=0))
    with (
        open_stream(served.url, connections=3, window=256 * KiB) as f,
        gzip.GzipFile(fileobj=f) as gz,
    ):
        assert gz.read() == original


def test_zipfile_random_access(rangeserver: RangeHTTPServer) -> None:
    """ZipFile seeks to the central directory at the end, then to each member it reads: the
    big member in the middle, never read, is never fetched."""
    first = b"first member\n" * 300
    middle = pattern_bytes(3 * MiB, 15)
    last = pattern_bytes(200_000, 16) + b"x" * 200_000
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("first.txt", first, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("middle.bin", middle, compress_type=zipfile.ZIP_STORED)
        z.writestr("last.bin", last, compress_type=zipfile.ZIP_DEFLATED)
    archive = raw.getvalue()
    served = serve_file(rangeserver, "/a.zip", archive)
    with (
        open_stream(served.url, connections=2, window=256 * KiB) as f,
        zipfile.ZipFile(f) as z,  # type: ignore[arg-type]
    ):
        assert z.namelist() == ["first.txt", "middle.bin", "last.bin"]
        assert z.read("last.bin") == last
        assert z.read("first.txt") == first
    fetched = set(served.ranges_requested())
    assert sum(end + 1 - start for start, end in fetched) < len(archive) - 2 * MiB


# --- seek and tell --------------------------------------------------------------------------


def test_seek_and_tell(rangeserver: RangeHTTPServer) -> None:
    size = 2 * MiB + 11
    data = data_of(size, seed=17)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=2, window=256 * KiB) as f:
        assert f.seekable()
        assert f.tell() == 0
        assert f.read(100) == data[:100]
        assert f.tell() == 100
        assert f.seek(50, io.SEEK_CUR) == 150
        assert f.read(10) == data[150:160]
        assert f.seek(-10, io.SEEK_END) == size - 10
        assert f.read() == data[-10:]
        assert f.read(5) == b""
        assert f.seek(0) == 0
        assert f.read(5) == data[:5]
        assert f.seek(1_000_000, io.SEEK_SET) == 1_000_000
        assert read_exact(f, 300_000) == data[1_000_000:1_300_000]
        assert f.tell() == 1_300_000
        assert f.seek(-300_000, io.SEEK_CUR) == 1_000_000  # back
        assert f.read(20) == data[1_000_000:1_000_020]
        assert f.seek(size + 10) == size + 10  # past the end: reads give nothing
        assert f.read() == b""
        assert f.tell() == size + 10
        with pytest.raises((ValueError, OSError)):
            f.seek(-1)
        with pytest.raises((ValueError, OSError)):
            f.seek(0, 7)
        assert f.seek(3) == 3
        assert f.read(3) == data[3:6]
    with pytest.raises(ValueError):
        f.tell()
    with pytest.raises(ValueError):
        f.seek(0)
    with pytest.raises(ValueError):
        f.read(1)


def test_seek_outside_the_window_restarts_it_there(rangeserver: RangeHTTPServer) -> None:
    size = 4 * MiB
    data = data_of(size, seed=18)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=2, window=256 * KiB) as f:
        piece = f.piece
        assert piece == PIECE
        assert f.read(10) == data[:10]
        target = 8 * piece + 100
        f.seek(target)
        assert f.read(1000) == data[target : target + 1000]
        assert f.tell() == target + 1000
    starts = {start for start, _ in served.ranges_requested()}
    assert 8 * piece in starts
    # Only the pieces of the two windows: around 0, and around the target.
    assert starts <= {0, piece, 8 * piece, 9 * piece}, sorted(starts)


def test_seek_within_the_window_keeps_what_was_fetched(rangeserver: RangeHTTPServer) -> None:
    size = 2 * MiB
    data = data_of(size, seed=19)
    served = serve_file(rangeserver, "/f.bin", data)
    with open_stream(served.url, connections=2, window=MiB) as f:
        piece = f.piece
        assert f.read(10) == data[:10]
        f.seek(2 * piece + 7)
        assert f.read(100) == data[2 * piece + 7 : 2 * piece + 107]
        rest = f.read()
        assert rest == data[2 * piece + 107 :]
    ranges = served.ranges_requested()
    assert ranges.count((2 * piece, 3 * piece - 1)) == 1


@pytest.mark.parametrize(
    ("faults", "restarts"),
    [
        # The probe's GET gets a 200: no ranges. Restarts: the seeks back to 0 and to 5.
        (Faults(ignore_range=True, head_status=405), 2),
        # No ranges and no length at all: SEEK_END reads to the end to learn the size, so
        # the seek to size - 10 is a seek back too.
        (Faults(ignore_range=True, chunked=True), 3),
    ],
    ids=["no-ranges", "no-ranges-chunked"],
)
def test_seek_without_ranges(rangeserver: RangeHTTPServer, faults: Faults, restarts: int) -> None:
    """Without ranges, seeks work all the same: forward reads on and discards, back starts
    the plain stream again from byte 0."""
    data = data_of(500_000, seed=20)
    served = serve_file(rangeserver, "/f.bin", data, faults)
    with open_stream(served.url, connections=4) as f:
        assert f.seekable()
        assert f.seek(0) == 0
        assert f.seek(10) == 10
        assert read_exact(f, 100) == data[10:110]
        assert f.seek(0) == 0  # back
        assert read_exact(f, 100) == data[:100]
        assert f.seek(100_000, io.SEEK_CUR) == 100_100
        assert read_exact(f, 50) == data[100_100:100_150]
        assert f.seek(-10, io.SEEK_END) == len(data) - 10
        assert f.read() == data[-10:]
        assert f.seekable()
        assert f.seek(5) == 5  # back
        assert f.read() == data[5:]
    gets = served.gets()
    assert len(gets) == 1 + 1 + restarts  # the probe's, the first plain stream, the restarts
    assert all(r.range_header is None for r in gets[1:])


# --- servers without ranges -----------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(ignore_range=True),  # advertises ranges, then answers every range with 200
        Faults(ignore_range=True, head_status=405),  # the probe finds out: a plain stream
        Faults(ignore_range=True, chunked=True),  # no ranges, no length
        Faults(ignore_range=True, advertise_ranges=False),
    ],
    ids=["ignored", "refused-by-probe", "chunked", "not-advertised"],
)
def test_server_without_ranges_gets_one_plain_stream(
    rangeserver: RangeHTTPServer, faults: Faults
) -> None:
    data = data_of(1_500_007, seed=21)
    served = serve_file(rangeserver, "/f.bin", data, faults)
    with open_stream(served.url, connections=4, window=256 * KiB) as f:
        assert readinto_loop(f, 64 * KiB) == data
    full = [r for r in served.gets() if r.status == 200 and not r.truncated]
    assert len(full) >= 1
    if faults.head_status is not None or faults.chunked:
        # The probe's GET (closed at once) and one plain stream.
        assert len(served.gets()) == 2


# --- fetch ----------------------------------------------------------------------------------


def test_fetch_small(rangeserver: RangeHTTPServer) -> None:
    data = data_of(123_457, seed=22)
    served = serve_file(rangeserver, "/f.json", data)
    assert segdl.fetch(served.url) == data
    assert segdl.fetch(served.url, max_size=len(data), connections=2) == data


def test_fetch_empty(rangeserver: RangeHTTPServer) -> None:
    served = serve_file(rangeserver, "/empty", b"")
    assert segdl.fetch(served.url, max_size=0) == b""


def test_fetch_refuses_by_content_length_before_any_body(rangeserver: RangeHTTPServer) -> None:
    data = data_of(4 * MiB, seed=23)
    served = serve_file(rangeserver, "/big.bin", data)
    with pytest.raises(segdl.TooLargeError) as caught:
        segdl.fetch(served.url, max_size=len(data) - 1, connections=8)
    assert isinstance(caught.value, segdl.SegdlError)
    assert served.wait_idle(HANG_GUARD)
    assert [r.method for r in served.requests] == ["HEAD"]  # the probe only, no body GET
    assert served.bytes_sent() == 0


def test_fetch_refuses_mid_way_when_no_length_is_known(rangeserver: RangeHTTPServer) -> None:
    data = data_of(3 * MiB, seed=24)
    served = serve_file(rangeserver, "/big.bin", data, Faults(chunked=True, ignore_range=True))
    with pytest.raises(segdl.TooLargeError):
        segdl.fetch(served.url, max_size=MiB)
    assert segdl.fetch(served.url, max_size=len(data)) == data


def test_fetch_max_size_negative_is_a_usage_error(rangeserver: RangeHTTPServer) -> None:
    served = serve_file(rangeserver, "/f", b"abc")
    with pytest.raises(segdl.UsageError):
        segdl.fetch(served.url, max_size=-1)


# --- threads never outlive the object -------------------------------------------------------


def test_close_mid_stream_stops_every_connection(rangeserver: RangeHTTPServer) -> None:
    data = data_of(8 * MiB, seed=25)
    served = serve_file(rangeserver, "/f.bin", data, Faults(rate=256 * KiB))
    baseline = segdl_threads()
    f = open_stream(served.url, connections=4, window=2 * MiB)
    assert f.read(1000) == data[:1000]
    assert new_threads(baseline)  # the workers are running
    f.close()
    assert new_threads(baseline) == []
    assert f.closed
    f.close()  # twice is fine
    with pytest.raises(ValueError):
        f.read(1)
    assert served.wait_idle(HANG_GUARD)  # every response ended: the connections are gone
    assert served.bytes_sent() < len(data)


@pytest.mark.parametrize("server", ["rangeserver", "keepalive_server"])
def test_close_while_the_body_hangs(request: pytest.FixtureRequest, server: str) -> None:
    """close() stops connections whose headers came but whose body never does, at once,
    whether the server closes each connection after its answer or keeps it alive."""
    data = data_of(2 * MiB, seed=26)
    httpd: RangeHTTPServer = request.getfixturevalue(server)
    served = serve_file(httpd, "/f.bin", data, Faults(stall_after_headers=60))
    baseline = segdl_threads()
    f = open_stream(served.url, connections=2, window=MiB)
    assert wait_for(lambda: len(served.gets()) >= 2)
    f.close()
    assert new_threads(baseline) == [], "threads outlived close()"


def test_close_while_waiting_for_headers(rangeserver: RangeHTTPServer) -> None:
    """close() stops connections still waiting for the server's answer, at once."""
    data = data_of(2 * MiB, seed=26)
    served = serve_file(rangeserver, "/f.bin", data)
    release = threading.Event()

    def hook(record: RequestRecord) -> None:
        if record.method == "GET":
            release.wait(60)  # the server says nothing until the test ends

    served.request_hook = hook
    baseline = segdl_threads()
    try:
        f = open_stream(served.url, connections=2, window=MiB)
        assert wait_for(lambda: len(served.gets()) >= 2)
        f.close()
        assert new_threads(baseline) == [], "threads outlived close()"
    finally:
        release.set()


def test_context_manager_closes(rangeserver: RangeHTTPServer) -> None:
    data = data_of(3 * MiB, seed=27)
    served = serve_file(rangeserver, "/f.bin", data)
    baseline = segdl_threads()
    with open_stream(served.url, connections=4, window=MiB) as f:
        assert f.read(10) == data[:10]
    assert f.closed
    assert new_threads(baseline) == []


def test_dropped_unclosed_stream_leaves_no_threads(rangeserver: RangeHTTPServer) -> None:
    """A consumer that stops reading and drops the object: its connections go with it."""
    data = data_of(4 * MiB, seed=28)
    served = serve_file(rangeserver, "/f.bin", data)
    baseline = segdl_threads()
    f = open_stream(served.url, connections=4, window=MiB)
    assert f.read(10) == data[:10]
    assert new_threads(baseline)
    ref = weakref.ref(f)
    del f
    gc.collect()
    try:
        gone = wait_for(lambda: new_threads(baseline) == [], timeout=5)
        assert gone, f"threads left after the RemoteFile was dropped: {new_threads(baseline)}"
        assert ref() is None
    finally:
        leftover = ref()
        if leftover is not None:  # kept alive (by its own workers?): do not leak into others
            leftover.close()


def test_threads_end_after_an_error(rangeserver: RangeHTTPServer) -> None:
    data = data_of(2 * MiB, seed=29)
    served = serve_file(rangeserver, "/f.bin", data, Faults(change_after_bytes=256 * KiB))
    baseline = segdl_threads()
    with (
        pytest.raises(segdl.RemoteChangedError),
        open_stream(served.url, connections=2, window=256 * KiB) as f,
    ):
        f.read()
    assert new_threads(baseline) == []


# --- errors come from the one tree ----------------------------------------------------------


def test_404_is_an_http_status_error(rangeserver: RangeHTTPServer) -> None:
    rangeserver.expect_request("/missing").respond_with_data("no such file", status=404)
    url = rangeserver.url_for("/missing")
    with pytest.raises(segdl.HTTPStatusError) as caught:
        open_stream(url)
    assert caught.value.status == 404
    with pytest.raises(segdl.HTTPStatusError):
        segdl.fetch(url, clock=fast_clock()[0])


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/f", "", "http://"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    baseline = segdl_threads()
    with pytest.raises(segdl.UsageError):
        segdl.open(url)
    with pytest.raises(segdl.UsageError):
        segdl.fetch(url)
    assert new_threads(baseline) == []


def test_bad_window_is_a_usage_error(rangeserver: RangeHTTPServer) -> None:
    served = serve_file(rangeserver, "/f", b"abc")
    with pytest.raises(segdl.UsageError):
        segdl.open(served.url, window=0)


def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(segdl.NetworkError):
        open_stream(f"http://127.0.0.1:{port}/f", retries=1)


def test_cancelled_before_open_is_interrupted(rangeserver: RangeHTTPServer) -> None:
    served = serve_file(rangeserver, "/f", b"abc")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(segdl.Interrupted):
        segdl.open(served.url, cancel=cancel)


def test_random_reads_match(rangeserver: RangeHTTPServer) -> None:
    """Random seeks and reads of random sizes all give the served bytes."""
    size = 3 * MiB + 1
    data = data_of(size, seed=30)
    served = serve_file(rangeserver, "/f.bin", data)
    rnd = random.Random(31)
    with open_stream(served.url, connections=3, window=512 * KiB) as f:
        for _ in range(40):
            pos = rnd.randrange(size)
            n = rnd.randrange(1, 400_000)
            assert f.seek(pos) == pos
            got = b""
            while len(got) < n and (chunk := f.read(n - len(got))):
                got += chunk
            assert got == data[pos : pos + n]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loopback requests must not go through a proxy from the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield
