"""End-to-end downloads through `segdl.download` against the RFC 9110 test server.

Every test compares the file on disk with the served bytes, and asserts on the requests the
server saw, never on timing.
"""

from __future__ import annotations

import gzip
import itertools
import os
import threading
from pathlib import Path

import pytest
from fakes import fast_clock, payload
from rangeserver import Faults, RangeHTTPServer, serve_file

import segdl

KIB = 1024
MIB = 1024 * 1024


def covered(ranges: list[tuple[int, int]], size: int) -> bool:
    """Whether the inclusive ranges together cover [0, size)."""
    seen = bytearray(size)
    for start, end in ranges:
        seen[start : end + 1] = b"\1" * (end + 1 - start)
    return all(seen)


@pytest.mark.parametrize(
    ("size", "connections", "min_split"),
    [
        (1, 16, MIB),  # one byte
        (3, 16, MIB),  # fewer bytes than connections: one range
        (1_000_003, 8, 64 * KIB),  # a prime
        (4 * 64 * KIB, 8, 64 * KIB),  # exactly at the min-split boundary: 4 ranges
        (4 * 64 * KIB + 1, 8, 64 * KIB),  # one past it
        (2 * MIB, 1, MIB),  # one connection, ranged
    ],
)
def test_sizes(
    httpserver: RangeHTTPServer, tmp_path: Path, size: int, connections: int, min_split: int
) -> None:
    data = payload(size)
    served = serve_file(httpserver, "/f.bin", data)
    result = segdl.download(
        served.url, tmp_path / "f.bin", connections=connections, min_split=min_split
    )
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.size == size and result.segmented
    gets = served.ranges_requested()
    # Four ranges are planned per connection, none below the minimum split; fast loopback
    # answers leave nothing worth stealing, so the plan is exactly what was asked for.
    expected_parts = max(1, min(4 * connections, size // min_split))
    assert len(gets) == expected_parts
    assert result.connections == min(connections, expected_parts)
    for start, end in gets:
        assert end - start + 1 >= min(min_split, size)
    assert covered(gets, size)
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]  # no .part or control file left


def test_zero_bytes_makes_an_empty_file_with_one_request_at_most(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(httpserver, "/empty", b"")
    result = segdl.download(served.url, tmp_path / "empty", connections=16)
    assert (tmp_path / "empty").read_bytes() == b""
    assert result.size == 0
    assert len(served.requests) <= 1


def test_ranges_never_overlap_and_use_inclusive_ends(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(10 * 64 * KIB + 5)
    served = serve_file(httpserver, "/f", data)
    segdl.download(served.url, tmp_path / "f", connections=4, min_split=64 * KIB)
    assert (tmp_path / "f").read_bytes() == data
    # The plan (10 ranges: 4 per connection, none under 64 KiB) tiles the file exactly, with
    # inclusive ends; on a fast loopback server nothing is slow enough to be stolen.
    plan = sorted(served.ranges_requested())
    assert len(plan) == 10
    for (_, end), (start, _) in itertools.pairwise(plan):
        assert start == end + 1
    assert plan[0][0] == 0 and plan[-1][1] == len(data) - 1
    assert served.bytes_sent() == len(data)


def test_requests_ask_for_identity_and_range_headers(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(3 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(gzip_if_asked=True))
    segdl.download(served.url, tmp_path / "f", connections=3)
    assert (tmp_path / "f").read_bytes() == data
    for record in served.gets():
        assert record.headers.get("Accept-Encoding") == "identity"
        assert record.status == 206
        assert record.if_match == '"v1"'  # every range carries the validator


@pytest.mark.parametrize("status", [405, 403, 404, 501])
def test_head_refused_falls_back_to_a_ranged_get_probe(
    httpserver: RangeHTTPServer, tmp_path: Path, status: int
) -> None:
    data = payload(2 * MIB + 17)
    served = serve_file(httpserver, "/f", data, faults=Faults(head_status=status))
    result = segdl.download(served.url, tmp_path / "f", connections=4)
    assert (tmp_path / "f").read_bytes() == data
    assert result.segmented
    probe = served.gets()[0]
    assert probe.range_header == "bytes=0-0"
    assert probe.body_bytes <= 1


def test_head_without_length_probes_with_get(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(head_no_length=True))
    result = segdl.download(served.url, tmp_path / "f", connections=2)
    assert (tmp_path / "f").read_bytes() == data
    assert result.segmented


def test_chunked_ranges_without_length_are_used(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # HEAD gives no length; the bytes=0-0 probe's Content-Range does, and chunked 206s are fine.
    data = payload(3 * MIB + 3)
    served = serve_file(httpserver, "/f", data, faults=Faults(chunked=True))
    result = segdl.download(served.url, tmp_path / "f", connections=8)
    assert (tmp_path / "f").read_bytes() == data
    assert result.segmented and result.connections == 3


def test_unknown_size_streams_once(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(3 * MIB + 3)
    served = serve_file(httpserver, "/f", data, faults=Faults(chunked=True, ignore_range=True))
    result = segdl.download(served.url, tmp_path / "f", connections=8)
    assert (tmp_path / "f").read_bytes() == data
    assert not result.segmented and result.size == len(data)
    full = [r for r in served.gets() if r.range_header is None]
    assert len(full) == 1


@pytest.mark.parametrize("advertise", [True, False])
def test_server_ignoring_range_gives_a_correct_file_via_one_stream(
    httpserver: RangeHTTPServer, tmp_path: Path, advertise: bool
) -> None:
    data = payload(3 * MIB + 1)
    served = serve_file(
        httpserver, "/f", data, faults=Faults(ignore_range=True, advertise_ranges=advertise)
    )
    result = segdl.download(served.url, tmp_path / "f", connections=4)
    assert (tmp_path / "f").read_bytes() == data
    assert not result.segmented
    assert any("ignored the Range" in w for w in result.warnings)


def test_wrong_content_range_start_is_never_written(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(wrong_range_start=1))
    result = segdl.download(served.url, tmp_path / "f", connections=4)
    # Fell back to one plain stream, which does not involve ranges at all.
    assert (tmp_path / "f").read_bytes() == data
    assert not result.segmented
    assert any("Content-Range" in w for w in result.warnings)


def test_long_body_is_refused_and_no_file_is_left(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(long_body=1))
    clock, _ = fast_clock()
    with pytest.raises(segdl.TransferError):
        segdl.download(served.url, tmp_path / "f", connections=4, clock=clock)
    assert not (tmp_path / "f").exists()


def test_body_one_byte_short_is_retried_then_fails_cleanly(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(short_body=1))
    clock, sleeps = fast_clock()
    with pytest.raises(segdl.TruncatedError):
        segdl.download(served.url, tmp_path / "f", connections=2, retries=2, clock=clock)
    assert not (tmp_path / "f").exists()
    assert sleeps.delays  # it backed off before giving up
    # Each retry resumed where an answer broke off, one byte before the end of its range
    # (the first connection to run out of retries may stop the other before it retries).
    starts = {start for start, _ in served.ranges_requested()}
    assert starts <= {0, MIB, MIB - 1, 2 * MIB - 1}
    assert starts & {MIB - 1, 2 * MIB - 1}


def test_gzip_when_asked_for_identity_is_refused(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(gzip_always=True))
    clock, _ = fast_clock()
    with pytest.raises(segdl.ProtocolViolation, match="gzip"):
        segdl.download(served.url, tmp_path / "f", connections=2, clock=clock)
    assert not (tmp_path / "f").exists()
    assert gzip.decompress(gzip.compress(data)) == data  # the server really would have gzipped


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="report.pdf"', "report.pdf"),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename=".hidden"', "name.bin"),
    ],
)
def test_content_disposition_names_the_file(
    httpserver: RangeHTTPServer, tmp_path: Path, header: str, expected: str
) -> None:
    data = payload(1000)
    served = serve_file(httpserver, "/dl/name.bin", data, faults=Faults(content_disposition=header))
    result = segdl.download(served.url, directory=tmp_path / "out")
    assert result.path == tmp_path / "out" / expected
    assert result.path.read_bytes() == data
    assert sorted(os.listdir(tmp_path / "out")) == [expected]


def test_url_name_is_percent_decoded_without_query(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(10)
    serve_file(httpserver, "/a b.txt", data)
    result = segdl.download(httpserver.url_for("/a%20b.txt") + "?token=1", directory=tmp_path)
    assert result.path == tmp_path / "a b.txt"
    assert result.path.read_bytes() == data


def test_slow_connection_is_relieved_by_work_stealing(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    size = 4 * MIB
    data = payload(size)
    # The connection that asks for the first range trickles; the others are fast.
    served = serve_file(httpserver, "/f", data, faults=Faults(slow={0: 256 * KIB}))
    result = segdl.download(served.url, tmp_path / "f", connections=4, min_split=64 * KIB)
    assert (tmp_path / "f").read_bytes() == data
    ranges = served.ranges_requested()
    first_stop = size // 16  # the slow connection was planned [0, 256 KiB): 1 s at its rate
    stolen = [start for start, _ in ranges if 0 < start < first_stop]
    assert stolen, f"no range inside the slow segment was taken over: {ranges}"
    # The slow connection stopped at the new boundary instead of sending its whole range.
    slow = next(r for r in served.gets() if r.ranges and r.ranges[0][0] == 0)
    assert slow.body_bytes < first_stop
    assert result.connections == 4


def test_library_never_prints(
    httpserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(ignore_range=True))
    segdl.download(served.url, tmp_path / "f", connections=4)
    assert (tmp_path / "f").read_bytes() == data
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_listener_sees_start_progress_and_finish(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(3 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(rate=4 * MIB))

    class Recorder(segdl.Listener):
        def __init__(self) -> None:
            self.events: list[tuple[str, object]] = []

        def start(self, info: segdl.StartInfo) -> None:
            self.events.append(("start", info.total))

        def progress(self, done: int, total: int | None, connections: int) -> None:
            self.events.append(("progress", done))

        def finish(self, done: int) -> None:
            self.events.append(("finish", done))

    recorder = Recorder()
    segdl.download(served.url, tmp_path / "f", connections=3, listener=recorder)
    assert (tmp_path / "f").read_bytes() == data
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert recorder.events[0][1] == len(data) and recorder.events[-1][1] == len(data)
    dones = [v for kind, v in recorder.events if kind == "progress"]
    assert dones == sorted(dones)  # progress never goes backwards


def test_redirected_url_is_downloaded_from_its_target(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/real.bin", data)
    httpserver.expect_request("/alias").respond_with_data(
        "", status=302, headers={"Location": "/real.bin"}
    )
    result = segdl.download(httpserver.url_for("/alias"), directory=tmp_path)
    # Named after the URL the user gave, not after the redirect target.
    assert result.path == tmp_path / "alias"
    assert result.path.read_bytes() == data
    assert result.final_url == served.url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connections": 0}, "connections"),
        ({"connections": 65}, "connections"),
        ({"min_split": 0}, "min split"),
        ({"if_exists": "explode"}, "if_exists"),
        ({"checksum": "crc32=00"}, "checksum"),
        ({"checksum": "sha256=abc"}, "64 hexadecimal"),
    ],
)
def test_bad_options_raise_usage_errors(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(segdl.UsageError, match=message):
        segdl.download("http://127.0.0.1:9/x", tmp_path / "x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "file:///etc/passwd", "host/x", "http://", "data:,x", "http://h:99999/"]
)
def test_bad_urls_raise_invalid_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(segdl.InvalidURLError):
        segdl.download(url, tmp_path / "x")
    assert os.listdir(tmp_path) == []


def test_public_api_is_what_all_says() -> None:
    for name in segdl.__all__:
        assert hasattr(segdl, name), name
    assert issubclass(segdl.UsageError, segdl.SegdlError)
    assert issubclass(segdl.TransferError, segdl.SegdlError)
    assert issubclass(segdl.DestinationError, segdl.SegdlError)


def test_idle_workers_leave_when_the_last_range_ends(
    httpserver: RangeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight connections, two ranges: six workers idle, waiting for a range worth taking over.
    # They must be woken when the ranges end, not by their idle poll (made endless here).
    monkeypatch.setattr("segdl.core.scheduler._IDLE_POLL", 1e6)
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f.bin", data)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(
                segdl.download(served.url, tmp_path / "f.bin", connections=8, min_split=MIB)
            )
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a hang guard, not a speed limit: the download needs milliseconds
    assert not worker.is_alive(), "idle workers were never woken"
    assert isinstance(outcome[0], segdl.Result)
    assert (tmp_path / "f.bin").read_bytes() == data
