"""Speed limits (`--limit-rate`, `--limit-rate-per-host`, `limit_rate=`, `limit_rate_per_host=`).

The bucket is tested with a fake clock (no real time): the rate over windows, the burst after
an idle spell, turns between waiters, a wait ended by a stop. End to end, every download is
compared with the served bytes, and the limit is checked from the server's side, from the
times its chunks were written (`RequestRecord.sends`, from servers with a small send buffer):
by every moment, no more sent than the rate allows plus a generous allowance for the burst
and the bytes in flight; never a time measured by the client.
"""

from __future__ import annotations

import heapq
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HANG_GUARD, cli, one_line_error
from rangeserver import (
    Faults,
    RangeHTTPServer,
    RequestRecord,
    pattern_bytes,
    serve_file,
    serve_files,
)

import segdl
from segdl.cli import bench
from segdl.core.clock import Clock
from segdl.core.fetch import Fetcher, Stop
from segdl.core.http.transport import RequestsPool
from segdl.core.limit import BURST, Bucket, Meter, Throttle
from segdl.core.options import Options, parse_rate
from segdl.core.retry import RetryPolicy
from segdl.core.scheduler import Scheduler
from segdl.core.urls import origin

KiB, MiB = 1 << 10, 1 << 20
SEND_BUFFER = 32 * KiB  # the test servers' SO_SNDBUF
# What may be sent ahead of the limit: the burst (0.1 s worth) and more, and what a
# connection's socket buffers take (on loopback, whose packets are 64 KiB, a new connection's
# receive window alone is about 640 KiB).
AHEAD_SECONDS = 0.25
IN_FLIGHT = 1 * MiB


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# -- the bucket, on a fake clock -----------------------------------------------------------------


def drain(bucket: Bucket, clock: FakeTime, seconds: float) -> list[tuple[float, int]]:
    """One greedy reader for `seconds` of fake time: (time the bytes may be read, bytes)."""
    end = clock.now + seconds
    reads: list[tuple[float, int]] = []
    while clock.now < end:
        n, delay = bucket.reserve(1 << 30)
        clock.sleep(delay)
        reads.append((clock.now, n))
    return reads


@pytest.mark.parametrize("rate", [1, 1000, 300 * KiB, 20 * MiB, 1024**3])
def test_a_greedy_reader_gets_the_rate_over_any_window(rate: int) -> None:
    clock = FakeTime()
    bucket = Bucket(rate, monotonic=clock)
    reads = drain(bucket, clock, 12.0)
    start = reads[0][0]
    for window in (1.0, 10.0):
        for offset in (0.0, 0.37, 1.0):
            a = start + offset
            got = sum(n for t, n in reads if a <= t < a + window)
            # At most the window's worth plus the burst; at least the window's minus a slice.
            assert got <= rate * window + bucket.capacity + 1
            assert got >= rate * window - bucket.slice - 1


def test_burst_after_idling_is_at_most_a_tenth_of_a_second_worth() -> None:
    clock = FakeTime()
    bucket = Bucket(8 * MiB, monotonic=clock)
    drain(bucket, clock, 2.0)
    clock.sleep(3600.0)  # idle for an hour
    free = 0
    while True:
        n, delay = bucket.reserve(1 << 30)
        if delay > 0:
            break
        free += n
    assert BURST == 0.1
    assert 0 < free <= 8 * MiB * BURST
    assert bucket.slice <= bucket.capacity


def test_a_slice_is_a_fiftieth_of_a_second_within_bounds() -> None:
    assert Bucket(1 * MiB).slice == MiB // 50
    assert Bucket(1000 * MiB).slice == 256 * KiB
    assert Bucket(100 * KiB).slice == 4 * KiB
    assert Bucket(10_000).slice == 1000  # never more than the burst
    assert Bucket(1).slice == 1


def test_waiters_take_turns_and_none_starves() -> None:
    """16 connections far faster than the limit (they read a grant at once and ask again):
    after 10 s of fake time each has its share within a slice or two."""
    clock = FakeTime()
    bucket = Bucket(1 * MiB, monotonic=clock)
    got = [0] * 16
    # When each asks next (and in which order, at one time: behind those already there).
    ready = [(clock.now, i, i) for i in range(16)]
    heapq.heapify(ready)
    end = clock.now + 10.0
    order = 16
    while ready[0][0] < end:
        at, _, i = heapq.heappop(ready)
        clock.now = at
        n, delay = bucket.reserve(1 << 30)
        got[i] += n
        heapq.heappush(ready, (at + delay, order, i))
        order += 1
    share = sum(got) / 16
    assert sum(got) <= 10 * MiB + bucket.capacity + 16 * bucket.slice
    assert all(abs(g - share) <= 2 * bucket.slice for g in got), got


def test_a_refund_goes_to_the_next_reader() -> None:
    clock = FakeTime()
    bucket = Bucket(1 * MiB, monotonic=clock)
    drain(bucket, clock, 1.0)
    n, delay = bucket.reserve(1 << 30)
    bucket.refund(n)
    assert bucket.reserve(n) == (n, delay)


def test_a_meter_reads_no_more_than_it_was_granted() -> None:
    clock = FakeTime()
    bucket = Bucket(1 * MiB, monotonic=clock)
    asked: list[int] = []

    def readinto(view: memoryview) -> int:
        asked.append(len(view))
        n = min(len(view), 3000)  # the socket gives less than asked
        view[:n] = b"x" * n
        return n

    meter = Meter((bucket,), readinto, clock.sleep)
    buffer = memoryview(bytearray(MiB))
    start = clock.now
    total = 0
    while total < 4 * MiB:
        total += meter.read(buffer)
    assert max(asked) <= bucket.slice
    # Reads took exactly what was paid for: 4 MiB at 1 MiB/s, less the burst.
    assert clock.now - start == pytest.approx(4.0 - BURST, abs=bucket.slice / MiB)
    # What was granted and not read goes back when the body is done with: the next slice
    # waits that much less than a slice's time.
    left = total % bucket.slice and bucket.slice - total % bucket.slice
    assert left > 0
    meter.close()
    _, delay = bucket.reserve(bucket.slice)
    assert delay == pytest.approx((bucket.slice - left) / MiB)


def test_a_meter_takes_the_host_bucket_then_the_run_bucket() -> None:
    clock = FakeTime()
    throttle = Throttle(4 * MiB, 1 * MiB, monotonic=clock)
    a, b = origin("http://a.example/"), origin("http://b.example/")
    assert len(throttle.buckets(a)) == 2
    assert throttle.buckets(a)[0] is throttle.buckets(a)[0]  # one bucket per host, kept
    assert throttle.buckets(a)[0] is not throttle.buckets(b)[0]
    assert throttle.buckets(a)[1] is throttle.buckets(b)[1]  # the run's, shared
    assert Throttle().meter(a, io.BytesIO().readinto, clock.sleep) is None
    got = {a: 0, b: 0}
    meters = {
        h: Meter(throttle.buckets(h), lambda v: len(v), clock.sleep)  # type: ignore[misc]
        for h in (a, b)
    }
    view = memoryview(bytearray(MiB))
    start = clock.now
    while clock.now < start + 10:
        for host, meter in meters.items():
            got[host] += meter.read(view)
    # Each host is held to 1 MiB/s (the run's 4 MiB/s is not what binds).
    for host in (a, b):
        assert 9.5 * MiB <= got[host] <= 10.2 * MiB


def test_a_stop_ends_a_wait_at_once_and_gives_the_grant_back() -> None:
    bucket = Bucket(4096, monotonic=lambda: 1000.0)  # time stands still: only a stop ends it
    for _ in range(10_000):
        bucket.reserve(1 << 30)  # the next grant is minutes away
    halt = threading.Event()
    scheduler = Scheduler(max_connections=1, per_host=1)
    tries = Fetcher(scheduler, Clock()).attempts(
        origin("http://a.example/"), RetryPolicy(total=0), halt=halt
    )
    waiting = threading.Event()

    def wait(seconds: float) -> None:
        waiting.set()
        tries.pause(seconds)

    meter = Meter((bucket,), lambda v: len(v), wait)  # type: ignore[misc]
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            meter.read(memoryview(bytearray(100)))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert waiting.wait(HANG_GUARD)
    _, before = bucket.reserve(0)
    halt.set()
    thread.join(HANG_GUARD)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Stop)
    # The grant of the stopped read went back to the bucket.
    _, after = bucket.reserve(0)
    assert after == pytest.approx(before - bucket.slice / 4096)
    scheduler.close()


# -- options and usage errors --------------------------------------------------------------------


def test_rates_parse_like_sizes() -> None:
    assert parse_rate("500K") == 500 * KiB
    assert parse_rate("20M") == 20 * MiB
    assert parse_rate("1.5G") == 3 * 1024**3 // 2
    assert parse_rate("1") == 1
    assert Options(limit_rate=1, limit_rate_per_host=10).limit_rate == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "0", "fast", "-5M", ""])
def test_a_bad_rate_is_refused_before_any_request(
    rangeserver: RangeHTTPServer, tmp_path: Path, value: object
) -> None:
    served = serve_file(rangeserver, "/f.bin", b"x" * 1000)
    for name in ("limit_rate", "limit_rate_per_host"):
        with pytest.raises(segdl.UsageError):
            segdl.download(served.url, tmp_path / "f.bin", **{name: value})  # type: ignore[arg-type]
        with pytest.raises(segdl.UsageError):
            segdl.download_many([served.url], tmp_path, **{name: value})
        with pytest.raises(segdl.UsageError):
            segdl.open(served.url, **{name: value})  # type: ignore[arg-type]
    assert rangeserver.requests == []


@pytest.mark.parametrize("value", ["0", "fast", "-5", "1.5", "10X"])
@pytest.mark.parametrize("flag", ["--limit-rate", "--limit-rate-per-host"])
def test_a_bad_rate_is_a_usage_error_of_one_line(
    capsys: pytest.CaptureFixture[str],
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    flag: str,
    value: str,
) -> None:
    served = serve_file(rangeserver, "/f.bin", b"x" * 1000)
    code, _, err = cli(capsys, served.url, "-o", str(tmp_path / "f.bin"), f"{flag}={value}")
    assert code == 2
    assert flag in one_line_error(err)
    code, _, err = cli(capsys, "bench", served.url, f"{flag}={value}")
    assert code == 2
    one_line_error(err, prefix="segdl bench: error:")
    assert rangeserver.requests == []
    assert not (tmp_path / "f.bin").exists()


# -- end to end, the rate seen by the server -----------------------------------------------------


def _running(host: str) -> Iterator[RangeHTTPServer]:
    # A small send buffer: the server's chunks leave as the client reads them, not megabytes
    # ahead into the kernel (see RangeHTTPServer's `send_buffer`).
    server = RangeHTTPServer(host=host, send_buffer=SEND_BUFFER)
    server.start()
    yield server
    server.stop()
    try:
        server.check_assertions()
        server.check_handler_errors()
    finally:
        server.clear()


@pytest.fixture
def server() -> Iterator[RangeHTTPServer]:
    yield from _running("127.0.0.1")


@pytest.fixture
def server2() -> Iterator[RangeHTTPServer]:
    yield from _running("127.0.0.2")


def gets(*servers: RangeHTTPServer) -> list[RequestRecord]:
    return [r for s in servers for r in s.requests if r.method == "GET"]


def assert_held(records: list[RequestRecord], rate: int, connections: int) -> None:
    """By every moment t, the server sent at most `rate` * t bytes since its first chunk,
    plus the burst and what the sockets hold (generously)."""
    allowance = rate * AHEAD_SECONDS + (connections + 1) * IN_FLIGHT
    sends = sorted(s for r in records for s in r.sends)
    total = sum(n for _, n in sends)
    # The test can fail: twice the rate would overshoot by half the bytes.
    assert total / 2 > allowance, "transfer too small to see the limit"
    first, sent = sends[0][0], 0
    for t, n in sends:
        sent += n
        assert sent <= rate * (t - first) + allowance, (t - first, sent)


def test_a_file_holds_the_limit_and_every_range_moves(
    server: RangeHTTPServer, tmp_path: Path
) -> None:
    """4 ranges of 4 MiB at 8 MiB/s in all, far below what loopback gives: when the first
    range is done, each of the others has come a long way too (no connection waits while
    others run)."""
    data = pattern_bytes(16 * MiB, seed=4)
    served = serve_file(server, "/f.bin", data)
    result = segdl.download(
        served.url, tmp_path / "f.bin", connections=4, limit_rate="8M", min_split=4 * MiB
    )
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.segmented and result.connections == 4
    records = gets(server)
    assert len(records) == 4  # one request per range: none stolen, nothing fetched twice
    assert_held(records, 8 * MiB, 4)
    first_done = min(r.sends[-1][0] for r in records)
    moved = [sum(n for t, n in r.sends if t <= first_done) for r in records]
    assert all(m >= 2 * MiB for m in moved), moved


def test_a_batch_shares_one_limit_between_its_files_and_hosts(
    server: RangeHTTPServer, server2: RangeHTTPServer, tmp_path: Path
) -> None:
    files = {f"/f{i}.bin": pattern_bytes(MiB + i, seed=i) for i in range(8)}
    urls = [s.url for s in serve_files(server, files).values()]
    urls += [s.url for s in serve_files(server2, files).values()]
    items = [(u, f"{n}/{u.rsplit('/', 1)[1]}") for n, u in enumerate(urls)]
    results = segdl.download_many(items, tmp_path, jobs=2, connections=2, limit_rate="8M")
    assert sorted(r.status for r in results) == ["ok"] * 16, results
    for n, url in enumerate(urls):
        name = url.rsplit("/", 1)[1]
        assert (tmp_path / str(n) / name).read_bytes() == files["/" + name]
    assert_held(gets(server, server2), 8 * MiB, 2)


def test_each_host_has_its_own_limit(
    server: RangeHTTPServer, server2: RangeHTTPServer, tmp_path: Path
) -> None:
    data = pattern_bytes(16 * MiB, seed=5)
    one = serve_file(server, "/a.bin", data)
    two = serve_file(server2, "/a.bin", data)
    results = segdl.download_many(
        [(one.url, "one.bin"), (two.url, "two.bin")],
        tmp_path,
        jobs=2,
        connections=2,
        max_connections=4,
        limit_rate_per_host="8M",
        min_split=MiB,
    )
    assert sorted(r.status for r in results) == ["ok", "ok"], results
    assert (tmp_path / "one.bin").read_bytes() == data
    assert (tmp_path / "two.bin").read_bytes() == data
    assert_held(gets(server), 8 * MiB, 2)
    assert_held(gets(server2), 8 * MiB, 2)


def test_a_stream_holds_the_limit(server: RangeHTTPServer) -> None:
    data = pattern_bytes(16 * MiB, seed=6)
    served = serve_file(server, "/f.bin", data)
    with segdl.open(served.url, connections=4, limit_rate="8M") as remote:
        assert remote.read() == data
    assert_held(gets(server), 8 * MiB, 4)


def test_a_plain_stream_holds_the_limit(server: RangeHTTPServer) -> None:
    data = pattern_bytes(8 * MiB, seed=7)
    served = serve_file(server, "/f.bin", data, Faults(ignore_range=True))
    assert segdl.fetch(served.url, limit_rate="4M") == data
    assert_held(gets(server), 4 * MiB, 1)


def test_an_extraction_holds_the_limit(server: RangeHTTPServer, tmp_path: Path) -> None:
    member = pattern_bytes(16 * MiB, seed=8)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    served = serve_file(server, "/a.tar", archive.getvalue())
    segdl.extract(served.url, tmp_path / "out", connections=4, limit_rate="8M")
    assert (tmp_path / "out" / "data.bin").read_bytes() == member
    assert_held(gets(server), 8 * MiB, 4)


def test_the_command_holds_the_limit(
    capsys: pytest.CaptureFixture[str], server: RangeHTTPServer, tmp_path: Path
) -> None:
    data = pattern_bytes(16 * MiB, seed=9)
    served = serve_file(server, "/f.bin", data)
    out = tmp_path / "f.bin"
    code, _, err = cli(capsys, served.url, "-o", str(out), "-n", "2", "--limit-rate", "8M", "-q")
    assert code == 0, err
    assert out.read_bytes() == data
    assert_held(gets(server), 8 * MiB, 2)


def test_bench_passes_the_limits_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[dict[str, object]] = []

    def download(url: str, dest: Path, **kwargs: object) -> None:
        seen.append(kwargs)
        raise segdl.Interrupted("enough")

    monkeypatch.setattr(bench, "download", download)
    argv = ["http://127.0.0.1:9/x", "-n", "2", "--limit-rate", "3M"]
    code, _, _ = cli(capsys, "bench", *argv, "--limit-rate-per-host=500K")
    assert code == 130
    assert seen[0]["limit_rate"] == 3 * MiB
    assert seen[0]["limit_rate_per_host"] == 500 * KiB


@pytest.mark.parametrize("limited", [True, False])
def test_under_a_limit_range_sockets_keep_a_small_receive_buffer(
    keepalive_server: RangeHTTPServer, limited: bool
) -> None:
    """The kernel grows a slow reader's buffer to megabytes, and the server then sends in
    bursts the limiter never sees: under a limit the range connections cap it."""
    served = serve_file(keepalive_server, "/f.bin", b"x" * 100_000)
    options = Options(limit_rate=1 << 20) if limited else Options()
    pool = RequestsPool(options)
    try:
        asked = pool.lean.receive_buffer
        response = pool.lean.send("GET", served.url, {})
        size = response._conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        response.close()
    finally:
        pool.close()
    if limited:
        assert size == 2 * (128 << 10)  # socket(7): Linux doubles what was asked for
    else:
        assert asked is None  # autotuning owns it
