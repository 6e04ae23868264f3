"""End-to-end tests of the batch mode (`segdl.api.download_many` / `iter_download_many`)
against the loopback range server: every test compares the files with the served bytes and
asserts on what the server saw (its request log, its concurrency peaks), never on timing."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import NOW, Sleeps, fast_clock, payload
from helpers import files_under, gets_of, small_files
from rangeserver import (
    Faults,
    RangeHTTPServer,
    RequestRecord,
    pattern_bytes,
    serve_file,
    serve_files,
)

from segdl import Clock
from segdl.api import download_many, iter_download_many
from segdl.batch.manifest import read_manifest
from segdl.batch.results import ItemResult
from segdl.errors import Interrupted

MiB = 1 << 20
THROTTLE = 64 * 1024  # bytes/s: a small file takes a few tens of milliseconds


# --- helpers --------------------------------------------------------------------------------


def all_paths(root: Path) -> set[str]:
    """Every entry (file, folder, link) under `root`, relative, for escape checks."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def by_index(results: list[ItemResult]) -> dict[int, ItemResult]:
    indexed = {r.index: r for r in results}
    assert len(indexed) == len(results), f"two results for one item: {results}"
    return indexed


def refused_url(path: str = "/gone.bin") -> str:
    """A URL on a port where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def fast_monotonic_clock(speed: float = 200.0) -> Clock:
    """A clock whose sleeps are instant and whose monotonic time runs `speed` times faster, so
    that a host paused by Retry-After resumes after milliseconds of real time."""
    base = time.monotonic()
    return Clock(
        monotonic=lambda: base + (time.monotonic() - base) * speed,
        sleep=Sleeps(),
        wall=lambda: NOW,
        rand=lambda: 0.5,
    )


class JointPeak:
    """The peak number of requests being answered at once over several servers together.

    Each server counts its own requests from arrival until just before the last body chunk
    (its `max_concurrent`); this wraps the server's own per-request slot, so the joint count
    starts and ends at exactly the same points.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *servers: RangeHTTPServer) -> None:
        self._lock = threading.Lock()
        self._now = 0
        self.peak = 0
        for server in servers:
            monkeypatch.setattr(server, "_arrived", self._wrap(server._arrived))

    def _wrap(self, arrived: Callable[[RequestRecord], Any]) -> Callable[[RequestRecord], Any]:
        def wrapped(record: RequestRecord) -> Any:
            slot = arrived(record)
            if slot is None:
                return None
            with self._lock:
                self._now += 1
                self.peak = max(self.peak, self._now)
            return _JointSlot(slot, self)

        return wrapped

    def _release(self) -> None:
        with self._lock:
            self._now -= 1


class _JointSlot:
    def __init__(self, inner: Any, joint: JointPeak) -> None:
        self._inner = inner
        self._joint = joint
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        self._inner.release()
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._joint._release()


# --- basics ---------------------------------------------------------------------------------


def test_list_of_urls_downloads_every_file(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    files = small_files(12)
    served = serve_files(rangeserver, files)
    results = download_many(
        [s.url for s in served.values()], tmp_path, jobs=4, clock=fast_clock()[0]
    )
    assert sorted(r.index for r in results) == list(range(12))
    assert {r.status for r in results} == {"ok"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    indexed = by_index(results)
    for i, (path, data) in enumerate(files.items()):
        assert indexed[i].path == tmp_path / path.lstrip("/")
        assert indexed[i].size == len(data)
        assert indexed[i].url == served[path].url
    # A small file is one GET, no HEAD probe.
    assert sorted(gets_of(rangeserver)) == sorted(files)
    assert not [r for r in rangeserver.requests if r.method == "HEAD"]


def test_pairs_mappings_and_template_fields(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    served = serve_files(rangeserver, small_files(4))
    urls = [s.url for s in served.values()]
    data = list(small_files(4).values())
    items = [
        (urls[0], "pairs/first.bin"),
        {"url": urls[1], "path": "maps/second.bin"},
        {"url": urls[2], "class": "cats", "id": 7},
        urls[3],
    ]
    results = download_many(
        items, tmp_path, template="{class}/{id}{ext}", clock=fast_clock()[0], jobs=2
    )
    indexed = by_index(results)
    assert indexed[0].status == indexed[1].status == indexed[2].status == "ok"
    got = files_under(tmp_path)
    assert got["pairs/first.bin"] == data[0]
    assert got["maps/second.bin"] == data[1]
    assert got["cats/7.bin"] == data[2]
    # The bare URL has neither {class} nor {id}: failed with a reason, or named without them;
    # never outside DIR, and if a file was written it holds the right bytes.
    if indexed[3].status == "ok":
        assert indexed[3].path is not None and indexed[3].path.read_bytes() == data[3]
    else:
        assert indexed[3].error


def test_empty_list_fetches_nothing(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    serve_files(rangeserver, small_files(2))
    assert download_many([], tmp_path / "out", clock=fast_clock()[0]) == []
    assert rangeserver.requests == []
    assert files_under(tmp_path / "out") == {}


# --- mirrors --------------------------------------------------------------------------------


def test_mirror_after_404_is_used(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(5000, seed=3)
    missing = serve_file(rangeserver, "/a/file.bin", b"x", Faults(status_sequence=[404] * 50))
    good = serve_file(rangeserver, "/b/file.bin", data)
    results = download_many([{"url": [missing.url, good.url]}], tmp_path, clock=fast_clock()[0])
    [result] = results
    assert result.status == "ok", result.error
    assert result.url == good.url
    assert result.path == tmp_path / "file.bin"
    assert files_under(tmp_path) == {"file.bin": data}
    assert [r.status for r in missing.gets()] == [404]  # a 404 is final: tried once
    assert len(good.gets()) == 1


def test_mirror_after_refused_connection_is_used(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    dead = refused_url("/f000.bin")
    items = [
        {"url": [dead, served[0].url]},
        {"url": [refused_url(), served[1].url]},
        {"url": [dead.replace("f000", "f002"), served[2].url]},  # a host already known dead
    ]
    results = by_index(download_many(items, tmp_path, retries=2, jobs=1, clock=fast_clock()[0]))
    for i in range(3):
        assert results[i].status == "ok", results[i].error
        assert results[i].url == served[i].url
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert sorted(gets_of(rangeserver)) == sorted(files)


# --- hostile values -------------------------------------------------------------------------


def test_hostile_field_values_never_leave_directory(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(6, prefix="img")
    served = list(serve_files(rangeserver, files).values())
    data = list(files.values())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    dest = tmp_path / "deep" / "out"
    before = all_paths(tmp_path)
    items = [
        {"url": served[0].url, "id": "../../x", "class": "cats"},
        {"url": served[1].url, "id": "ok", "class": "/etc"},
        {"url": served[2].url, "id": "..", "class": ".."},
        {"url": served[3].url, "id": "a/../../../b", "class": "~"},
        {"url": served[4].url, "id": "../outside/keep", "class": "..", "path": "../../../abs"},
        {"url": served[5].url, "id": "z", "class": "c", "path": "/etc/passwd-segdl-test"},
    ]
    results = download_many(items, dest, template="{class}/{id}.jpg", clock=fast_clock()[0], jobs=3)
    assert len(results) == 6
    after = all_paths(tmp_path)
    escaped = {p for p in after - before if p != "deep" and not p.startswith("deep/out")}
    assert escaped == set()
    assert (outside / "keep.txt").read_bytes() == b"keep"
    assert not Path("/etc/passwd-segdl-test").exists()
    written = files_under(dest)
    for r in results:
        if r.status == "ok":
            assert r.path is not None
            assert r.path.resolve().is_relative_to(dest.resolve())
            rel = r.path.relative_to(dest).as_posix()
            assert ".." not in rel.split("/")
            assert written[rel] == data[r.index]
        else:
            assert r.status == "failed" and r.error
    # Every file written belongs to one ok item.
    assert sorted(written) == sorted(
        r.path.relative_to(dest).as_posix() for r in results if r.status == "ok" and r.path
    )


# --- duplicates -----------------------------------------------------------------------------


def test_same_url_twice_is_fetched_once(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(4000, seed=5)
    served = serve_file(rangeserver, "/dup.bin", data)
    results = download_many([served.url, served.url], tmp_path, clock=fast_clock()[0])
    statuses = sorted(r.status for r in results)
    assert statuses == ["ok", "skipped"]
    assert files_under(tmp_path) == {"dup.bin": data}
    assert len(served.gets()) == 1, [r.range_header for r in served.gets()]


def test_same_url_and_path_twice_is_fetched_once(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(4000, seed=6)
    served = serve_file(rangeserver, "/dup.bin", data)
    results = download_many(
        [(served.url, "x/one.bin"), (served.url, "x/one.bin")], tmp_path, clock=fast_clock()[0]
    )
    indexed = by_index(results)
    assert indexed[0].status == "ok"
    assert indexed[1].status == "skipped"
    assert files_under(tmp_path) == {"x/one.bin": data}
    assert len(served.gets()) == 1


def test_two_urls_to_one_explicit_path_later_fails(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    first, second = payload(3000, seed=7), payload(3000, seed=8)
    a = serve_file(rangeserver, "/a.bin", first)
    b = serve_file(rangeserver, "/b.bin", second)
    results = download_many(
        [(a.url, "same.bin"), (b.url, "same.bin")], tmp_path, clock=fast_clock()[0]
    )
    indexed = by_index(results)
    assert indexed[0].status == "ok"
    assert indexed[1].status == "failed"
    assert indexed[1].error is not None
    assert "same.bin" in indexed[1].error and "item 0" in indexed[1].error
    assert files_under(tmp_path) == {"same.bin": first}
    assert b.gets() == []  # refused before any request


def test_two_urls_with_one_remote_name_later_fails(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    first, second = payload(3000, seed=9), payload(3000, seed=10)
    a = serve_file(rangeserver, "/a/name.bin", first)
    b = serve_file(rangeserver, "/b/name.bin", second)
    results = download_many([a.url, b.url], tmp_path, jobs=1, clock=fast_clock()[0])
    indexed = by_index(results)
    assert indexed[0].status == "ok"
    assert indexed[1].status == "failed"
    assert indexed[1].error is not None and "name.bin" in indexed[1].error
    assert files_under(tmp_path) == {"name.bin": first}


def test_if_exists_rename_never_overwrites(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(3000, seed=12)
    served = serve_files(rangeserver, {"/a/x.bin": data, "/b/y.bin": data})
    (tmp_path / "x.bin").write_bytes(b"mine")
    (tmp_path / "y.bin").write_bytes(b"mine too")
    items = [served["/a/x.bin"].url, (served["/b/y.bin"].url, "y.bin")]  # by name, by path
    results = by_index(
        download_many(items, tmp_path, if_exists="rename", journal=False, clock=fast_clock()[0])
    )
    assert (tmp_path / "x.bin").read_bytes() == b"mine"
    assert (tmp_path / "y.bin").read_bytes() == b"mine too"
    for i, name in ((0, "x.bin"), (1, "y.bin")):
        assert results[i].status == "ok", results[i].error
        assert results[i].path is not None and results[i].path.name != name
        assert results[i].path.read_bytes() == data
    assert len(files_under(tmp_path)) == 4


# --- connection caps ------------------------------------------------------------------------


def test_per_host_cap_observed_at_server(keepalive_server: RangeHTTPServer, tmp_path: Path) -> None:
    files = small_files(40, size=4000)
    served = serve_files(keepalive_server, files, Faults(rate=THROTTLE))
    results = download_many(
        [s.url for s in served.values()], tmp_path, jobs=8, per_host=3, clock=fast_clock()[0]
    )
    assert {r.status for r in results} == {"ok"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert 1 <= keepalive_server.max_concurrent <= 3
    assert len(gets_of(keepalive_server)) == 40


def test_per_host_and_global_caps_over_two_hosts(
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    joint = JointPeak(monkeypatch, rangeserver, rangeserver2)
    files1 = small_files(16, prefix="one", size=4000)
    files2 = small_files(16, prefix="two", size=4000)
    served = list(serve_files(rangeserver, files1, Faults(rate=THROTTLE)).values())
    served += list(serve_files(rangeserver2, files2, Faults(rate=THROTTLE)).values())
    urls = [
        u for pair in zip(served[:16], served[16:], strict=True) for u in (pair[0].url, pair[1].url)
    ]
    results = download_many(
        urls, tmp_path, jobs=10, per_host=4, max_connections=5, clock=fast_clock()[0]
    )
    assert {r.status for r in results} == {"ok"}
    expected = {p.lstrip("/"): d for p, d in {**files1, **files2}.items()}
    assert files_under(tmp_path) == expected
    assert rangeserver.max_concurrent <= 4
    assert rangeserver2.max_concurrent <= 4
    assert joint.peak <= 5
    assert len(gets_of(rangeserver)) == len(gets_of(rangeserver2)) == 16


def test_keep_alive_connections_are_reused(
    keepalive_server: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(30, size=2000)
    served = serve_files(keepalive_server, files)
    results = download_many(
        [s.url for s in served.values()], tmp_path, jobs=4, per_host=4, clock=fast_clock()[0]
    )
    assert {r.status for r in results} == {"ok"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert len(gets_of(keepalive_server)) == 30
    assert keepalive_server.connections_opened <= 8
    by_conn = keepalive_server.requests_by_connection()
    assert max(len(v) for v in by_conn.values()) >= 4


# --- 429 on one host ------------------------------------------------------------------------


def test_429_host_does_not_hold_up_other_host(
    rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    files_a = small_files(6, prefix="a")
    files_b = small_files(12, prefix="b")
    served_a = serve_files(
        rangeserver, files_a, Faults(status_sequence=[429, 429, 429], retry_after="1")
    )
    served_b = serve_files(rangeserver2, files_b, Faults(rate=4 * THROTTLE))
    urls = [s.url for s in served_a.values()] + [s.url for s in served_b.values()]
    results = download_many(
        urls, tmp_path, jobs=4, per_host=2, retries=8, clock=fast_monotonic_clock()
    )
    assert {r.status for r in results} == {"ok"}, [r.error for r in results if r.error]
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in {**files_a, **files_b}.items()}
    for s in served_a.values():
        assert [r.status for r in s.gets()] == [429, 429, 429, 206]
    for s in served_b.values():
        assert len(s.gets()) == 1


def test_paused_host_leaves_other_host_running(
    rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    """Host A asks for an hour's pause: every item of host B still finishes meanwhile, and
    host A gets no request during its pause beyond the ones already under way."""
    files_a = small_files(8, prefix="a")
    files_b = small_files(16, prefix="b")
    served_a = serve_files(
        rangeserver, files_a, Faults(status_sequence=[429] * 100, retry_after="3600")
    )
    served_b = serve_files(rangeserver2, files_b)
    urls = [s.url for pair in zip(served_a.values(), served_b.values(), strict=False) for s in pair]
    urls += [s.url for s in list(served_b.values())[len(served_a) :]]
    b_urls = {s.url for s in served_b.values()}
    done: list[ItemResult] = []
    results = iter_download_many(urls, tmp_path, jobs=4, per_host=2, clock=fast_clock()[0])
    try:
        for result in results:
            done.append(result)
            if {r.url for r in done if r.status == "ok"} >= b_urls:
                break
    finally:
        results.close()  # type: ignore[attr-defined]
    assert {r.url for r in done if r.status == "ok"} == b_urls
    got = files_under(tmp_path)
    assert got == {p.lstrip("/"): d for p, d in files_b.items()}
    # The pause is honoured: A saw the requests under way when it first answered 429 (at most
    # per_host, give or take one that raced the news), not a retry budget for each of its items.
    assert 1 <= len(gets_of(rangeserver)) <= 4
    assert not any(p.startswith("a") for p in all_paths(tmp_path))


# --- content types --------------------------------------------------------------------------


def test_accept_refuses_html_page_at_image_url(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + payload(3000, seed=11)
    html = b"<html><body>Please log in</body></html>" * 20
    good = serve_file(rangeserver, "/pic.png", png, Faults(content_type="image/png"))
    bad = serve_file(rangeserver, "/other.png", html, Faults(content_type="text/html"))
    results = download_many([good.url, bad.url], tmp_path, accept="image/*", clock=fast_clock()[0])
    indexed = by_index(results)
    assert indexed[0].status == "ok"
    assert indexed[1].status == "failed"
    assert indexed[1].error is not None and "text/html" in indexed[1].error
    assert files_under(tmp_path) == {"pic.png": png}
    assert {p for p in all_paths(tmp_path) if not p.startswith(".segdl")} == {"pic.png"}


# --- journal and re-runs --------------------------------------------------------------------


def test_rerun_after_success_makes_no_request(
    keepalive_server: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(10)
    served = serve_files(keepalive_server, files)
    urls = [s.url for s in served.values()]
    first = download_many(urls, tmp_path, clock=fast_clock()[0])
    assert {r.status for r in first} == {"ok"}
    assert (tmp_path / ".segdl" / "journal.sqlite3").is_file()
    keepalive_server.wait_idle()
    keepalive_server.reset_stats()
    second = download_many(urls, tmp_path, clock=fast_clock()[0])
    assert {r.status for r in second} == {"skipped"}
    assert sorted(r.index for r in second) == list(range(10))
    assert keepalive_server.requests == []
    assert keepalive_server.connections_opened == 0
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}


def test_rerun_refetches_a_file_removed_since(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    files = small_files(5)
    served = serve_files(rangeserver, files)
    urls = [s.url for s in served.values()]
    download_many(urls, tmp_path, clock=fast_clock()[0])
    (tmp_path / "f002.bin").unlink()
    rangeserver.reset_stats()
    results = download_many(urls, tmp_path, clock=fast_clock()[0])
    assert by_index(results)[2].status == "ok"
    assert gets_of(rangeserver) == ["/f002.bin"]
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}


def test_failed_item_is_fetched_on_rerun_once_fixed(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(4)
    served = serve_files(rangeserver, files)
    broken = served["/f001.bin"]
    broken.faults.status_sequence = [404] * 100
    urls = [s.url for s in served.values()]
    first = by_index(download_many(urls, tmp_path, clock=fast_clock()[0]))
    assert first[1].status == "failed"
    assert first[1].http_status == 404
    assert "f001.bin" not in files_under(tmp_path)
    broken.faults.status_sequence = None  # fixed
    rangeserver.reset_stats()
    second = by_index(download_many(urls, tmp_path, clock=fast_clock()[0]))
    assert second[1].status == "ok"
    assert {second[i].status for i in (0, 2, 3)} == {"skipped"}
    assert gets_of(rangeserver) == ["/f001.bin"]
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}


def test_cancel_raises_interrupted_and_rerun_completes(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(6, size=3000)
    served = serve_files(rangeserver, files)
    slow = {f"/slow{i}.bin": pattern_bytes(40_000, seed=i) for i in range(4)}
    served_slow = serve_files(rangeserver, slow, Faults(rate=100_000))
    urls = [s.url for s in served.values()] + [s.url for s in served_slow.values()]
    cancel = threading.Event()
    seen: list[ItemResult] = []

    def run() -> None:
        for result in iter_download_many(
            urls, tmp_path, jobs=2, connections=1, cancel=cancel, clock=fast_clock()[0]
        ):
            seen.append(result)
            if len(seen) == 3:
                cancel.set()

    with pytest.raises(Interrupted):
        try:
            run()
        except KeyboardInterrupt:
            # A library caller that set `cancel` must get Interrupted, not Ctrl-C's exception.
            pytest.fail("setting cancel raised KeyboardInterrupt instead of Interrupted")
    finished = {r.url for r in seen if r.status == "ok"}
    assert len(finished) >= 3
    rangeserver.reset_stats()  # the first run is over: whatever comes now is the re-run's
    results = download_many(urls, tmp_path, clock=fast_clock()[0])
    assert len(results) == len(urls)
    assert {r.status for r in results} <= {"ok", "skipped"}
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in {**files, **slow}.items()}
    refetched = {r.path for r in rangeserver.requests if r.method == "GET"}
    for url in finished:
        assert url.split("/", 3)[3] not in {p.lstrip("/") for p in refetched}


# --- big and small files together -----------------------------------------------------------


def test_big_file_is_split_among_small_ones(
    rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    big = pattern_bytes(8 * MiB, seed=42)
    big_served = serve_file(rangeserver, "/big.bin", big, Faults(rate=3 * MiB))
    files = small_files(100, size=1500)
    served = serve_files(rangeserver2, files)
    urls = [big_served.url] + [s.url for s in served.values()]
    results = download_many(
        urls, tmp_path, connections=4, min_split=MiB, jobs=8, clock=fast_clock()[0]
    )
    assert {r.status for r in results} == {"ok"}, [r.error for r in results if r.error]
    got = files_under(tmp_path)
    assert got["big.bin"] == big
    assert got == {"big.bin": big, **{p.lstrip("/"): d for p, d in files.items()}}
    gets = big_served.gets()
    assert gets[0].range_header == "bytes=0-"
    ranges = big_served.ranges_requested()
    assert len(ranges) > 1
    assert by_index(results)[0].result is not None
    assert by_index(results)[0].result.segmented  # type: ignore[union-attr]
    assert len(gets_of(rangeserver2)) == 100


# --- manifests read by the library ----------------------------------------------------------


def test_malformed_jsonl_line_is_one_failed_item(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    lines = [
        json.dumps({"url": served[0].url}),
        '{"url": "' + served[1].url + '", ',  # broken JSON
        json.dumps({"url": served[1].url}),
        json.dumps({"url": served[2].url}),
    ]
    source = io.BytesIO(("\n".join(lines) + "\n").encode())
    results = by_index(
        download_many(
            read_manifest(source, format="jsonl"), tmp_path / "out", clock=fast_clock()[0]
        )
    )
    assert len(results) == 4
    assert results[1].status == "failed"
    assert results[1].error is not None and "line 2" in results[1].error
    assert {results[i].status for i in (0, 2, 3)} == {"ok"}
    data = list(files.values())
    assert files_under(tmp_path / "out") == {f"f00{i}.bin": data[i] for i in range(3)}


def test_journal_records_finished_items(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    files = small_files(3)
    served = serve_files(rangeserver, files)
    broken = serve_file(rangeserver, "/missing.bin", b"", Faults(status_sequence=[404] * 9))
    urls = [s.url for s in served.values()] + [broken.url]
    download_many(urls, tmp_path, clock=fast_clock()[0])
    with sqlite3.connect(tmp_path / ".segdl" / "journal.sqlite3") as db:
        rows = dict(db.execute("SELECT url, status FROM items").fetchall())
    assert rows == {**{s.url: "ok" for s in served.values()}, broken.url: "failed"}
