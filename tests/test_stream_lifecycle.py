"""What a `segdl.open` object holds, and when it lets go; seeks on servers without ranges.

A file object dropped unclosed must release everything when collected, as `io` objects do:
its worker threads, its sockets (also those opened in the workers), its file descriptors,
and it must stop fetching. Leaks are counted (threads, descriptors, unraisable exceptions,
ResourceWarnings, bytes the server sent), never timed; waits are hang guards only.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import threading
import warnings
import weakref
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import fast_clock
from helpers import wait_for
from rangeserver import Faults, RangeHTTPServer, pattern_bytes, serve_file

import segdl
from segdl.core.scheduler import Scheduler

KiB = 1 << 10
MiB = 1 << 20
HANG_GUARD = 10.0  # seconds: a bound for waits that should end at once


def open_stream(url: str, **kwargs: Any) -> segdl.RemoteFile:
    """`segdl.open` with retry back-offs that take no time."""
    kwargs.setdefault("clock", fast_clock()[0])
    return segdl.open(url, **kwargs)


def read_exact(f: io.RawIOBase, n: int) -> bytes:
    """`n` bytes (fewer only at the end): a raw read may return less than asked."""
    out = bytearray()
    while len(out) < n and (chunk := f.read(n - len(out))):
        out += chunk
    return bytes(out)


def segdl_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("segdl-"))


def open_sockets() -> int:
    """Socket descriptors of this process, both ends of the loopback connections (the test
    server's transient epoll descriptor is no leak of ours)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # gone meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


class Leaks:
    """What finalizers and threads let escape, from any thread: unraisable exceptions (an
    error in a `__del__`, e.g. "cannot join current thread"), exceptions that ended a
    thread, and ResourceWarnings ("unclosed socket")."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self.found: list[str] = []
        self.caught = caught

    def unraisable(self, info: Any) -> None:
        self.found.append(f"in {info.object!r}: {info.exc_type.__name__}: {info.exc_value}")

    def thread_died(self, args: Any) -> None:
        self.found.append(f"{args.thread.name}: {args.exc_type.__name__}: {args.exc_value}")

    def check(self) -> None:
        gc.collect()  # whatever is left in cycles: its sockets warn now
        found = self.found + [f"{w.category.__name__}: {w.message}" for w in self.caught]
        assert found == []


@pytest.fixture
def leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Leaks]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = Leaks(caught)
        monkeypatch.setattr(sys, "unraisablehook", found.unraisable)
        monkeypatch.setattr(threading, "excepthook", found.thread_died)
        yield found


# --- item 3: a dropped stream releases everything --------------------------------------------


@pytest.mark.parametrize("server", ["rangeserver", "keepalive_server"])
def test_dropped_stream_releases_everything(
    request: pytest.FixtureRequest, server: str, leaks: Leaks
) -> None:
    """Open, read a little, drop without close(), several times: every drop frees the object
    at once, its threads end, its sockets are closed (none left to warn), the socket
    descriptors come back to where they were, and no finalizer fails."""
    httpd: RangeHTTPServer = request.getfixturevalue(server)
    data = pattern_bytes(16 * MiB, 31)
    served = serve_file(httpd, "/f.bin", data)
    baseline = open_sockets()
    for _ in range(3):
        f = open_stream(served.url, connections=8, window=8 * MiB)
        assert read_exact(f, MiB) == data[:MiB]
        assert segdl_threads()
        ref = weakref.ref(f)
        del f
        gc.collect()
        try:
            assert ref() is None, "the dropped RemoteFile is still alive (held by its workers?)"
            assert wait_for(lambda: segdl_threads() == []), segdl_threads()
            # The server closes its side once the client closed its socket.
            closed = wait_for(lambda: open_sockets() <= baseline)
            assert closed, f"{open_sockets() - baseline} sockets left"
        finally:
            leftover = ref()
            if leftover is not None:  # do not leak into the next round or test
                leftover.close()
    leaks.check()


def test_dropped_stream_with_a_slow_reader_stops_fetching(
    rangeserver: RangeHTTPServer, leaks: Leaks
) -> None:
    """A reader that stops and drops the object: no byte is fetched for it any more (before,
    its workers kept it alive and fetched on until the window was full)."""
    data = pattern_bytes(16 * MiB, 32)
    served = serve_file(rangeserver, "/f.bin", data, Faults(rate=128 * KiB))
    f = open_stream(served.url, connections=2, window=4 * MiB)
    piece = f.piece
    assert piece == MiB
    assert f.read(10) == data[:10]
    sent_at_drop = served.bytes_sent()
    del f
    gc.collect()
    # Hang guard: with the leak, the workers would still be fetching when it ends.
    wait_for(lambda: segdl_threads() == [] and served.wait_idle(0))
    after = served.bytes_sent() - sent_at_drop
    assert after < piece // 2, f"{after} bytes sent after the drop"
    assert segdl_threads() == []
    assert served.wait_idle(0)
    leaks.check()


def test_dropped_stream_after_an_error_releases_everything(
    rangeserver: RangeHTTPServer, leaks: Leaks
) -> None:
    """The error a read raised holds the reader's frames, and so the RemoteFile: neither the
    failed job's registration nor an idle worker may keep it alive."""
    data = pattern_bytes(2 * MiB, 35)
    served = serve_file(rangeserver, "/f.bin", data, Faults(change_after_bytes=256 * KiB))
    f = open_stream(served.url, connections=2, window=256 * KiB)
    try:
        f.read()
    except segdl.RemoteChangedError:
        pass
    else:
        pytest.fail("the change went unnoticed")
    ref = weakref.ref(f)
    del f
    gc.collect()
    try:
        assert ref() is None, "the failed RemoteFile is still alive"
        assert wait_for(lambda: segdl_threads() == []), segdl_threads()
    finally:
        leftover = ref()
        if leftover is not None:
            leftover.close()
    leaks.check()


class _CloseFromWorker:
    """A range job whose one piece of work closes the scheduler, from the worker (what a
    finalizer run in a worker thread does)."""

    host = ("http", "example.invalid", 80)
    max_workers = 1
    workers = 0

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.done = threading.Event()

    def wants_worker(self) -> bool:
        return not self.done.is_set()

    def take(self, now: float) -> object | None:
        return None if self.done.is_set() else "the claim"

    def work(self, claim: object, buffer: memoryview) -> None:
        self.done.set()
        self.scheduler.close()


def test_scheduler_closed_from_its_own_worker(leaks: Leaks) -> None:
    """close() called in a worker (a stream collected there) must not join that thread."""
    scheduler = Scheduler(
        max_connections=2, per_host=2, buffer_factory=lambda: memoryview(bytearray(0))
    )
    job = _CloseFromWorker(scheduler)
    scheduler.add_job(job)
    assert job.done.wait(HANG_GUARD)
    assert wait_for(lambda: segdl_threads() == []), segdl_threads()
    leaks.check()


# --- item 6: seeks on a server that ignores ranges --------------------------------------------


def test_seek_back_where_the_server_ignores_ranges(
    rangeserver: RangeHTTPServer, leaks: Leaks
) -> None:
    """The server advertises ranges but answers each with the whole file: seekable() and
    seek() agree; a seek back starts one plain stream again from byte 0."""
    data = pattern_bytes(3 * MiB + 5, 33)
    served = serve_file(rangeserver, "/f.bin", data, Faults(ignore_range=True))
    with open_stream(served.url, connections=4, window=MiB) as f:
        assert f.seekable()
        assert read_exact(f, 1000) == data[:1000]
        assert f.seekable()
        assert f.seek(0) == 0
        assert read_exact(f, 2000) == data[:2000]
        assert f.seek(-7, io.SEEK_END) == len(data) - 7
        assert f.read() == data[-7:]
        assert f.seek(MiB) == MiB
        assert f.read() == data[MiB:]
    plain = [r for r in served.gets() if r.range_header is None]
    assert len(plain) == 3  # the first plain stream, and one per seek back
    assert all(r.status == 200 for r in served.gets())
    leaks.check()


def test_zipfile_where_the_server_ignores_ranges(
    rangeserver: RangeHTTPServer, leaks: Leaks
) -> None:
    """zipfile seeks to the end, then back to each member: it works there too."""
    members = {
        "a.txt": b"first member\n" * 3000,
        "b.bin": pattern_bytes(700 * KiB, 34),
        "c.txt": b"last\n" * 5000,
    }
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        for name, content in members.items():
            z.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a.zip", raw.getvalue(), Faults(ignore_range=True))
    with (
        open_stream(served.url, connections=2, window=256 * KiB) as f,
        zipfile.ZipFile(f) as z,  # type: ignore[arg-type]
    ):
        assert z.namelist() == list(members)
        assert {name: z.read(name) for name in reversed(members)} == members
    assert all(r.status == 200 for r in served.gets())
    leaks.check()
