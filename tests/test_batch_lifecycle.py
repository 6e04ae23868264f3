"""The life of a batch's threads: a consumer that stops reading or closes the results, a
cancel, a full disk, a host paused by 429. Every test compares the files with the served bytes
and asserts on what the server saw and on the threads and descriptors left, never on timing
(waits poll for a condition, with a generous deadline)."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import NOW
from helpers import files_under, segdl_threads, small_files, wait_for
from rangeserver import Faults, RangeHTTPServer, RequestRecord, pattern_bytes, serve_files

import segdl.core.sink
from segdl import Clock
from segdl.api import iter_download_many
from segdl.batch.journal import Journal
from segdl.batch.results import ItemResult
from segdl.cli import main
from segdl.core.scheduler import Paused, Scheduler
from segdl.errors import DiskFullError, Interrupted

MiB = 1 << 20
DEADLINE = 10.0  # seconds; only ever reached when something is wrong


# --- helpers --------------------------------------------------------------------------------------


def finished(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """The files under `root` with their final names; each must hold the served bytes."""
    got = {p: d for p, d in files_under(root).items() if not p.endswith((".part", ".segdl"))}
    for path, data in got.items():
        assert data == files["/" + path], path
    return got


def threads_gone() -> None:
    wait_for(lambda: not segdl_threads(), f"the batch's threads to end: {segdl_threads()}")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def fds_back(before: set[str]) -> None:
    """The descriptors open before are the only ones again (the server's side of a cut
    connection closes a moment after the client's)."""
    wait_for(lambda: open_fds() <= before, "the connections to close")


def journal_entries(directory: Path) -> dict[str, tuple[str, str | None]]:
    """url -> (status, path) of every committed journal entry."""
    path = directory / ".segdl" / "journal.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {u: (s, p) for u, s, p in db.execute("SELECT url, status, path FROM items")}
    finally:
        db.close()


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that ended a thread (none may)."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


# --- a consumer that stops reading, or closes the results -----------------------------------------


@pytest.mark.parametrize("how", ["close", "with", "del"])
def test_results_not_read_hold_back_the_batch_and_closing_stops_it(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    how: str,
    thread_errors: list[BaseException | None],
) -> None:
    files = small_files(300)
    served = serve_files(rangeserver, files)
    fds = open_fds()
    results = iter_download_many([s.url for s in served.values()], tmp_path, jobs=4)
    got = [next(results) for _ in range(5)]
    assert {r.status for r in got} == {"ok"}

    # The caller holds the results without reading them: the batch stops at a few results
    # ahead (the queue, `jobs` at least 8, and per file in flight one result in a driver's
    # hands; with libcurl, whose one driver keeps `jobs` requests in flight while it writes
    # the answers that came, two).
    def settled() -> bool:
        before = len(rangeserver.requests)
        time.sleep(0.3)
        return len(rangeserver.requests) == before

    wait_for(settled, "the batch to stop fetching")
    assert len(rangeserver.requests) <= 5 + 8 + 2 * 4
    if how == "close":
        results.close()
    elif how == "with":
        with results:
            pass
    else:
        del results
    threads_gone()
    fds_back(fds)
    assert len(finished(tmp_path, files)) <= 5 + 8 + 2 * 4
    assert thread_errors == []


def test_closing_mid_transfer_stops_downloads_and_a_rerun_completes(
    rangeserver: RangeHTTPServer, tmp_path: Path, thread_errors: list[BaseException | None]
) -> None:
    """Closed while big files stream: every thread ends, every transfer stops where it was
    (the first range of each file too, which its driver streams), and the next run resumes
    what was kept."""
    files = small_files(2)
    files.update({f"/big{i}.bin": pattern_bytes(4 * MiB, seed=i) for i in range(3)})
    served = serve_files(rangeserver, files, Faults(rate=256 * 1024))
    urls = [s.url for s in served.values()]
    first_range = 4 * MiB // 8  # two connections, four pieces each
    fds = open_fds()
    results = iter_download_many(urls, tmp_path, jobs=5, connections=2, min_split=256 * 1024)
    assert next(results).status == "ok"  # a small one; the big ones stream on meanwhile
    wait_for(lambda: sum(r.body_bytes for r in rangeserver.requests) > 256 * 1024, "bytes")
    results.close()
    threads_gone()
    assert rangeserver.wait_idle(DEADLINE)
    fds_back(fds)
    firsts = [r for r in rangeserver.requests if r.range_header == "bytes=0-" and r.path[1] == "b"]
    assert firsts and all(r.body_bytes < first_range for r in firsts), "ran on after close()"
    for s in served.values():
        s.faults.rate = None
    done = list(iter_download_many(urls, tmp_path, jobs=5, connections=2))
    assert {r.status for r in done} <= {"ok", "skipped"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert thread_errors == []


# --- a cancel wakes every wait --------------------------------------------------------------------


def test_cancel_stops_a_driver_streaming_its_first_range(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """The driver of a split file streams the file's first range itself: a cancel must stop
    that stream too, not only the other ranges (it used to run to the end of its range)."""
    data = pattern_bytes(8 * MiB, seed=3)
    served = serve_files(rangeserver, {"/big.bin": data}, Faults(rate=256 * 1024))["/big.bin"]
    cancel = threading.Event()
    first_range = 8 * MiB // 8  # two connections, four pieces each

    def cancel_once_streaming() -> None:
        wait_for(lambda: any(r.body_bytes >= 64 * 1024 for r in served.gets()), "bytes")
        cancel.set()

    helper = threading.Thread(target=cancel_once_streaming)
    helper.start()
    with pytest.raises(Interrupted):
        for _ in iter_download_many([served.url], tmp_path, jobs=2, connections=2, cancel=cancel):
            pass
    helper.join()
    threads_gone()
    assert served.wait_idle(DEADLINE)
    first = served.gets()[0]
    assert first.range_header == "bytes=0-"
    assert first.body_bytes < first_range, "the first range ran to its end after the cancel"
    served.faults.rate = None
    done = list(iter_download_many([served.url], tmp_path, connections=2))
    assert [r.status for r in done] == ["ok"]
    assert (tmp_path / "big.bin").read_bytes() == data


def test_cancel_wakes_a_request_waiting_for_its_answer(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """A host that takes an hour to answer: the cancel cuts the requests still waiting."""
    files = small_files(4)
    served = serve_files(rangeserver, files, Faults(delay_headers=3600))
    cancel = threading.Event()

    def cancel_once_asked() -> None:
        wait_for(lambda: len(rangeserver.requests) >= 2, "the requests")
        cancel.set()

    helper = threading.Thread(target=cancel_once_asked)
    helper.start()
    with pytest.raises(Interrupted):
        for _ in iter_download_many(
            [s.url for s in served.values()], tmp_path, jobs=2, cancel=cancel
        ):
            pass
    helper.join()
    threads_gone()
    assert files_under(tmp_path) == {}


def test_cancel_wakes_a_range_request_waiting_for_its_answer(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """A shared range worker waits for the headers of a range that the server holds back:
    the cancel cuts it too, and every thread of the run ends."""
    data = pattern_bytes(4 * MiB, seed=5)
    served = serve_files(rangeserver, {"/big.bin": data}, Faults(rate=256 * 1024))["/big.bin"]
    held = threading.Event()

    def hold_ranges(record: RequestRecord) -> None:
        if record.range_header != "bytes=0-":
            held.wait(60)

    served.request_hook = hold_ranges
    cancel = threading.Event()

    def cancel_once_held() -> None:
        wait_for(lambda: len(served.gets()) >= 2, "a range request")
        cancel.set()

    helper = threading.Thread(target=cancel_once_held)
    helper.start()
    try:
        with pytest.raises(Interrupted):
            for _ in iter_download_many(
                [served.url], tmp_path, jobs=1, connections=2, min_split=256 * 1024, cancel=cancel
            ):
                pass
        helper.join()
        threads_gone()
    finally:
        held.set()
    served.request_hook = None
    served.faults.rate = None
    assert [r.status for r in iter_download_many([served.url], tmp_path)] == ["ok"]
    assert (tmp_path / "big.bin").read_bytes() == data


def test_sigint_stops_a_batch_at_once_and_a_rerun_completes(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """Ctrl-C in `segdl -i LIST -j 4 -n 2`: exit 130 with the journal and state saved, and
    no response runs on (it used to: each driver streamed its first range to the end)."""
    files = {f"/big{i}.bin": pattern_bytes(4 * MiB, seed=i) for i in range(4)}
    served = serve_files(rangeserver, files, Faults(rate=256 * 1024))
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(s.url + "\n" for s in served.values()))
    dest = tmp_path / "out"
    argv = [sys.executable, "-m", "segdl", "-i", str(listing), "-d", str(dest), "-j", "4"]
    proc = subprocess.Popen(
        [*argv, "-n", "2", "--min-split", "256K", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "NO_PROXY": "*"},
    )

    def streaming() -> bool:
        return sum(r.body_bytes >= 64 * 1024 for r in rangeserver.requests) >= 4

    try:
        wait_for(streaming, "the files to stream")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"interrupted" in err
    assert rangeserver.wait_idle(DEADLINE)
    first_range = 4 * MiB // 8  # two connections, four pieces each
    firsts = [r for r in rangeserver.requests if r.range_header == "bytes=0-"]
    assert firsts and all(r.body_bytes < first_range for r in firsts), "ran on"
    for s in served.values():
        s.faults.rate = None
    assert main(["-i", str(listing), "-d", str(dest), "-j", "4", "-n", "2", "-q"]) == 0
    assert files_under(dest) == {p.lstrip("/"): d for p, d in files.items()}


# --- a full disk stops the batch ------------------------------------------------------------------


class FullAfter:
    """`sink._pwrite` that fails with ENOSPC once `files` files were written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, files: int) -> None:
        self._real = segdl.core.sink._pwrite
        self._left = files
        self._lock = threading.Lock()
        self._files: set[int] = set()  # inodes (descriptor numbers are reused)
        monkeypatch.setattr(segdl.core.sink, "_pwrite", self)

    def __call__(self, fd: int, data: memoryview, offset: int, lock: threading.Lock) -> int:
        inode = os.fstat(fd).st_ino
        with self._lock:
            if inode not in self._files:
                if self._left <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._left -= 1
                self._files.add(inode)
        written: int = self._real(fd, data, offset, lock)
        return written


def _check_consistent(tmp_path: Path, files: dict[str, bytes], urls: list[str]) -> set[str]:
    """What the journal holds is true: every item it calls finished is in place, whole; and
    it calls no item failed (a full disk is no item's fault). The finished URLs."""
    entries = journal_entries(tmp_path)
    assert {s for s, _ in entries.values()} <= {"ok"}, entries
    on_disk = finished(tmp_path, files)
    for url, (_, path) in entries.items():
        assert path in on_disk and url in urls
    return set(entries)


def test_full_disk_stops_the_batch_and_a_rerun_completes(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thread_errors: list[BaseException | None],
) -> None:
    files = small_files(60)
    served = serve_files(rangeserver, files)
    urls = [s.url for s in served.values()]
    full = FullAfter(monkeypatch, 10)
    seen: list[ItemResult] = []
    with pytest.raises(DiskFullError, match="No space left"):
        for result in iter_download_many(urls, tmp_path, jobs=4):
            seen.append(result)
    threads_gone()
    assert thread_errors == []
    assert {r.status for r in seen} <= {"ok"}, [r.error for r in seen]
    # The batch stopped at the first full write: the other items were never asked for.
    assert len(rangeserver.requests) <= 10 + 4 + 4
    done = _check_consistent(tmp_path, files, urls)
    assert done <= {r.url for r in seen}
    monkeypatch.setattr(segdl.core.sink, "_pwrite", full._real)  # room again
    rangeserver.reset_stats()
    again = list(iter_download_many(urls, tmp_path, jobs=4))
    assert {r.status for r in again} <= {"ok", "skipped"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert not {r.path for r in rangeserver.requests} & {u.split("/", 3)[3] for u in done}


def test_full_disk_under_the_journal_stops_the_batch(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thread_errors: list[BaseException | None],
) -> None:
    """The journal's database cannot grow: no thread ends in a traceback, the run raises."""
    files = small_files(40)
    served = serve_files(rangeserver, files)
    urls = [s.url for s in served.values()]
    real = Journal.record_ok
    count = [0]

    def record_ok(self: Journal, key: str, **kwargs: Any) -> None:
        count[0] += 1
        if count[0] > 6:
            raise DiskFullError(f"cannot write the journal {self.path}: database or disk is full")
        real(self, key, **kwargs)

    monkeypatch.setattr(Journal, "record_ok", record_ok)
    with pytest.raises(DiskFullError, match="disk is full"):
        for _ in iter_download_many(urls, tmp_path, jobs=4):
            pass
    threads_gone()
    assert thread_errors == []
    _check_consistent(tmp_path, files, urls)
    monkeypatch.setattr(Journal, "record_ok", real)
    again = list(iter_download_many(urls, tmp_path, jobs=4))
    assert {r.status for r in again} <= {"ok", "skipped"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}


def test_cli_full_disk_prints_one_line_and_the_summary(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    thread_errors: list[BaseException | None],
) -> None:
    files = small_files(40)
    served = serve_files(rangeserver, files)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(s.url + "\n" for s in served.values()))
    dest = tmp_path / "out"
    full = FullAfter(monkeypatch, 5)
    code = main(["-i", str(listing), "-d", str(dest), "-j", "4"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and thread_errors == []
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("segdl: error: ") and "No space left on device" in lines[0]
    assert lines[1].startswith("segdl: ") and " ok, 0 skipped, 0 failed;" in lines[1]
    threads_gone()
    monkeypatch.setattr(segdl.core.sink, "_pwrite", full._real)
    assert main(["-i", str(listing), "-d", str(dest), "-j", "4", "-q"]) == 0
    assert files_under(dest) == {p.lstrip("/"): d for p, d in files.items()}


def test_a_file_larger_than_the_free_space_fails_alone(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    thread_errors: list[BaseException | None],
) -> None:
    """The disk is not full: one file too large for it is that item's failure, and the batch
    goes on with the others."""
    files = {**small_files(6), "/big.bin": pattern_bytes(4 * MiB, seed=5)}
    served = serve_files(rangeserver, files)
    monkeypatch.setattr("segdl.file.free_space", lambda directory: 2 * MiB)
    results = {
        r.url: r for r in iter_download_many([s.url for s in served.values()], tmp_path, jobs=2)
    }
    threads_gone()
    assert thread_errors == []
    big = results.pop(served["/big.bin"].url)
    assert big.status == "failed"
    assert big.error is not None and "not enough free space" in big.error
    assert {r.status for r in results.values()} == {"ok"}
    del files["/big.bin"]
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}


# --- a paused host never holds up another host's items --------------------------------------------


@pytest.mark.parametrize(("jobs", "per_host"), [(1, 8), (2, 8), (4, 8), (4, 1), (16, 2)])
def test_items_of_a_paused_host_wait_without_holding_a_driver(
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    jobs: int,
    per_host: int,
) -> None:
    """Host A's items come first and A asks for an hour's pause: every item of host B is
    fetched meanwhile, by every driver, and A sees no request during its pause."""
    files_a = small_files(6, prefix="a")
    files_b = small_files(24, prefix="b")
    served_a = serve_files(
        rangeserver, files_a, Faults(status_sequence=[429] * 10, retry_after="3600")
    )
    served_b = serve_files(rangeserver2, files_b)
    urls = [s.url for s in served_a.values()] + [s.url for s in served_b.values()]
    b_urls = {s.url for s in served_b.values()}
    cancel = threading.Event()
    watchdog = threading.Timer(DEADLINE, cancel.set)  # B held up: fail, do not wait an hour
    watchdog.start()
    done: set[str] = set()
    # Real time and real (interruptible) sleeps: only the wall clock of Retry-After is fixed.
    clock = Clock(wall=lambda: NOW, rand=lambda: 0.5)
    try:
        with iter_download_many(
            urls, tmp_path, jobs=jobs, per_host=per_host, cancel=cancel, clock=clock
        ) as results:
            for result in results:
                assert result.status == "ok", result.error
                done.add(result.url)
                if done >= b_urls:
                    break
    except Interrupted:
        pytest.fail(f"host B's items were held up: {len(done & b_urls)} of {len(b_urls)} done")
    finally:
        watchdog.cancel()
    threads_gone()
    assert done == b_urls
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files_b.items()}
    # A saw the requests under way when it first answered 429, not one per item or retry.
    assert 1 <= len(rangeserver.requests) <= min(jobs, per_host)


def test_a_request_waiting_for_a_slot_leaves_when_its_host_is_paused() -> None:
    """A batch's request waiting for a slot of a host that then asks for a pause gives its
    driver back at once (the driver serves other hosts), instead of waiting out the pause."""
    scheduler = Scheduler(
        max_connections=4, per_host=1, buffer_factory=lambda: memoryview(bytearray(1))
    )
    host = ("http", "a.example", 80)
    scheduler.acquire(host)  # the one slot of host A, held
    outcome: list[str] = []

    def waiter() -> None:
        try:
            scheduler.acquire(host, leave_paused=True)
        except Paused:
            outcome.append("left")
        else:
            outcome.append("acquired")
            scheduler.release(host)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(lambda: scheduler.host_load(host)[0] == 2, "the request to wait")
    scheduler.refused(host, 3600.0)
    thread.join(DEADLINE)
    assert outcome == ["left"]
    scheduler.release(host)
    scheduler.close()
