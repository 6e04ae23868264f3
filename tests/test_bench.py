"""Tests of segdl.cli.bench: the loopback server (ranges, throttle, shutdown), run_bench and main.

Every payload is tiny and, except in the throttle tests (which use a fake clock), uncapped or
capped high, so the whole file runs in a few seconds and never asserts on wall-clock time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from segdl import IntegrityError, UsageError
from segdl import cli as segdl_cli
from segdl.cli.bench import (
    BenchServer,
    Progress,
    TokenBucket,
    UnsatisfiableRange,
    main,
    parse_range,
    run_bench,
)

KiB = 1024
SIZE = 1000
# Deterministic and without repeats at small shifts, so a byte off by one shows.
PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(SIZE))


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not go through a proxy from the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def server() -> Iterator[BenchServer]:
    with BenchServer(payload=PAYLOAD, rate=None) as bench:
        yield bench
    assert bench.errors == []


def get(server: BenchServer, headers: dict[str, str]) -> requests.Response:
    return requests.get(server.url, headers=headers, timeout=10)


def bench_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("segdl-bench")]


# -- parse_range, the pure part ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=999-999", (999, 999)),
        ("bytes=0-999", (0, 999)),
        ("bytes=10-19", (10, 19)),
        ("bytes=990-5000", (990, 999)),  # end clipped
        ("bytes=500-", (500, 999)),
        ("bytes=-1", (999, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-1000", (0, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the file is all of it
        ("BYTES=1-2", (1, 2)),  # the unit is case-insensitive
        ("bytes= 1-2 ,", (1, 2)),  # list whitespace and empty elements
        ("items=0-1", None),  # unknown unit: ignored
        ("bytes =0-1", None),
        ("bytes=0-1,5-6", None),  # several ranges: ignored (this server serves one)
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("bytes=1 -2", None),
        ("bytes=\u0661-2", None),  # a non-ASCII digit
        ("bytes", None),
    ],
)
def test_parse_range(value: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(value, SIZE) == expected


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=1000-", 1000),
        ("bytes=1000-2000", 1000),
        ("bytes=5-4", 1000),
        ("bytes=-0", 1000),
        ("bytes=0-0", 0),  # nothing of an empty representation is satisfiable
        ("bytes=-1", 0),
        ("bytes=0-", 0),
    ],
)
def test_parse_range_unsatisfiable(value: str, size: int) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(value, size)


# -- the server over HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_value", "first", "last"),
    [
        ("bytes=0-0", 0, 0),  # first byte
        ("bytes=999-999", 999, 999),  # last byte
        ("bytes=-10", 990, 999),  # suffix
        ("bytes=-5000", 0, 999),
        ("bytes=400-", 400, 999),  # open-ended
        ("bytes=100-199", 100, 199),
        ("bytes=900-5000", 900, 999),
    ],
)
def test_range_is_exact(server: BenchServer, range_value: str, first: int, last: int) -> None:
    response = get(server, {"Range": range_value})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.content == PAYLOAD[first : last + 1]
    assert response.headers["ETag"] == server.etag


@pytest.mark.parametrize("range_value", ["bytes=1000-", "bytes=5-4", "bytes=-0"])
def test_unsatisfiable_range_is_416(server: BenchServer, range_value: str) -> None:
    response = get(server, {"Range": range_value})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert response.content == b""


@pytest.mark.parametrize("range_value", ["bytes=0-1,5-6", "items=0-1", "bytes=x-"])
def test_ignored_range_sends_everything(server: BenchServer, range_value: str) -> None:
    response = get(server, {"Range": range_value})
    assert response.status_code == 200
    assert "Content-Range" not in response.headers
    assert response.content == PAYLOAD


def test_head_and_validators(server: BenchServer) -> None:
    head = requests.head(server.url, timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.headers["Accept-Ranges"] == "bytes"
    etag = head.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong
    assert head.content == b""
    assert get(server, {"Range": "bytes=1-2", "If-Match": etag}).status_code == 206
    assert get(server, {"Range": "bytes=1-2", "If-Match": '"other"'}).status_code == 412
    changed = get(server, {"Range": "bytes=1-2", "If-Range": '"other"'})
    assert (changed.status_code, changed.content) == (200, PAYLOAD)
    missing = requests.get(server.url.replace("payload.bin", "other"), timeout=10)
    assert missing.status_code == 404


def test_keep_alive(server: BenchServer) -> None:
    with requests.Session() as session:
        for range_value in ("bytes=0-9", "bytes=10-19", "bytes=0-"):
            response = session.get(server.url, headers={"Range": range_value}, timeout=10)
            assert response.status_code == 206
    server.close()  # joins the handler threads, so their counters are final
    assert server.stats.connections == 1
    assert server.stats.requests == 3
    assert server.stats.bytes_sent == 10 + 10 + SIZE


def test_close_ends_idle_and_throttled_connections() -> None:
    before = set(threading.enumerate())
    bench = BenchServer(payload=bytes(4 * 1024 * KiB), rate=64 * KiB).start()
    with requests.Session() as idle, requests.Session() as slow:
        assert idle.get(bench.url, headers={"Range": "bytes=0-0"}, timeout=10).ok
        # A 4 MiB body at 64 KiB/s would take a minute: close() must abort it.
        response = slow.get(bench.url, stream=True, timeout=10)
        assert len(response.raw.read(1024)) == 1024
        bench.close()
        with pytest.raises(requests.RequestException):
            response.content  # noqa: B018 - reads the rest of the (aborted) body
        response.close()
    assert bench_threads() == []
    assert set(threading.enumerate()) <= before
    assert bench.errors == []


# -- the throttle ------------------------------------------------------------------------------


def test_token_bucket_math() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    assert bucket.take(100, 0.0) == 0.0  # one burst right away
    assert bucket.take(100, 0.0) == pytest.approx(0.1)  # then at the rate
    assert bucket.take(50, 0.1) == pytest.approx(0.05)
    assert bucket.take(50, 10.0) == 0.0  # idle time refills only up to the burst ...
    assert bucket.take(100, 10.0) == pytest.approx(0.05)  # ... never more
    assert bucket.take(10, 9.0) == pytest.approx(0.06)  # a clock going back refills nothing


def test_token_bucket_never_exceeds_rate_even_when_sleeps_overshoot() -> None:
    rate, burst, step, total = 64 * KiB, 4 * KiB, 4 * KiB, 1024 * KiB
    bucket = TokenBucket(rate, burst, now=0.0)
    now = sent = 0.0
    for i in range(total // step):
        now += bucket.take(step, now)
        now += 0.001 * (i % 3)  # oversleep now and then, as real sleeps do
        sent += step
        assert sent <= burst + rate * now + 1e-6
    # Oversleeping is credited back, so the long-run rate is the cap, not less.
    assert sent / now == pytest.approx(rate, rel=0.07)


def test_throttle_caps_each_connection() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # a fake clock: sleeping takes no real time
        sleeps.append(seconds)
        now[0] += seconds

    size, rate = 1024 * KiB, 256 * KiB
    payload = bytes(range(256)) * (size // 256)
    with BenchServer(payload=payload, rate=rate, clock=lambda: now[0], sleep=sleep) as bench:
        burst = bench.slice_size
        for _ in range(2):  # two connections, one after the other: each gets its own bucket
            sleeps.clear()
            response = requests.get(bench.url, timeout=10)
            assert response.content == payload
            # Everything after the first burst waited its turn at the rate.
            assert sum(sleeps) == pytest.approx((size - burst) / rate)
            assert max(sleeps) <= burst / rate + 1e-9
        ranged = requests.get(bench.url, headers={"Range": "bytes=0-"}, timeout=10)
        assert ranged.status_code == 206
    assert bench.stats.requests == 3
    assert bench.stats.connections == 3
    assert bench.stats.bytes_sent == 3 * size
    assert bench.errors == []


# -- run_bench ---------------------------------------------------------------------------------


def test_run_bench_verifies_and_deletes(tmp_path: Path) -> None:
    events: list[Progress] = []
    with BenchServer(256 * KiB, rate=None) as bench:
        rows = run_bench(
            bench.url,
            [4, 1, 2, 2],
            directory=tmp_path,
            expected_sha256=bench.sha256,
            min_split=16 * KiB,
            trust_env=False,
            progress=events.append,
        )
    # One HEAD probe and at least n ranged GETs per count (more when a finished connection
    # steals half of a slower one's range), every byte sent at least once.
    assert bench.stats.requests >= 3 + (1 + 2 + 4)
    assert bench.stats.bytes_sent >= 3 * bench.size
    assert [row.connections for row in rows] == [1, 2, 4]
    assert [row.used for row in rows] == [1, 2, 4]
    assert all(row.sha256 == bench.sha256 and row.size == 256 * KiB for row in rows)
    assert all(row.baseline == 1 and len(row.times) == 1 for row in rows)
    assert rows[0].speedup == 1.0
    assert sum(row.best for row in rows) == 1
    # Each row is reported once it is measured, before the best one is known.
    assert [e.row for e in events if e.row is not None] == [replace(r, best=False) for r in rows]
    assert [(e.connections, e.done) for e in events if e.row is None and e.total is None] == [
        (1, 0),
        (2, 0),
        (4, 0),
    ]
    assert list(tmp_path.iterdir()) == []


def test_run_bench_repeat_without_expected_digest(tmp_path: Path) -> None:
    with BenchServer(64 * KiB, rate=None) as bench:
        (row,) = run_bench(bench.url, [2], repeat=3, directory=tmp_path, min_split=16 * KiB)
    assert len(row.times) == 3 and row.seconds in row.times
    assert row.sha256 == bench.sha256 and row.best
    assert list(tmp_path.iterdir()) == []


def test_run_bench_wrong_digest_fails_and_cleans_up(tmp_path: Path) -> None:
    with BenchServer(64 * KiB, rate=None) as bench, pytest.raises(IntegrityError):
        run_bench(bench.url, [1], directory=tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("connections", "repeat"), [([], 1), ([0], 1), ([65], 1), ([1], 0), ([1], 101)]
)
def test_run_bench_rejects_bad_arguments(connections: list[int], repeat: int) -> None:
    with pytest.raises(UsageError):
        run_bench("http://127.0.0.1:9/x", connections, repeat=repeat)


# -- main --------------------------------------------------------------------------------------


def test_main_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--size", "256K", "--rate", "64M", "--min-split", "16K", "--connections", "1,2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "segdl bench: embedded loopback server, 256 KiB payload, each connection capped at 64 MiB/s"
    )
    assert lines[1].split() == ["connections", "time", "s", "MiB/s", "speed-up"]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    assert lines[2].split()[3] in ("1.00\u00d7", "1.00x")
    assert lines[4].startswith("best: ")
    assert len(lines) == 5
    assert err == ""
    assert bench_threads() == []


def test_main_with_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with BenchServer(128 * KiB, rate=None) as bench:
        url = bench.url
        code = main([url, "-n", "1,2", "-k", "16K", "--repeat", "2", "--dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert url in out.splitlines()[0]
    assert out.splitlines()[-1].startswith("best: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--connections", "1,x"],
        ["--connections", "0"],
        ["--connections", "65"],
        ["--connections", ""],
        ["--repeat", "0"],
        ["--size", "lots"],
        ["--rate", "-1"],
        ["http://127.0.0.1:9/x", "--size", "1M"],  # --size is for the embedded server only
        ["ftp://127.0.0.1/x"],
        ["--dir", "/nonexistent/segdl-bench-test"],
    ],
)
def test_main_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("segdl bench: error: ")


def test_cli_dispatches_bench(capsys: pytest.CaptureFixture[str]) -> None:
    assert segdl_cli.main(["bench", "--connections", "1,x"]) == 2
    assert capsys.readouterr().err.startswith("segdl bench: error: ")


def test_main_failed_download(server: BenchServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([server.url.replace("payload.bin", "missing"), "-n", "1"]) == 1
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1
    assert err.startswith("segdl bench: error: ") and "404" in err
    assert "Traceback" not in out + err
