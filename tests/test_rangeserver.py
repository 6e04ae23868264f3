"""Tests of the test server itself (tests/rangeserver.py), using plain requests and sockets."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import rangeserver as rangeserver_module
import requests
from rangeserver import (
    BOUNDARY,
    Faults,
    RangeHTTPServer,
    RequestRecord,
    ServedFile,
    parse_range_header,
    pattern_bytes,
    resolve_range,
    serve_file,
    serve_files,
)

SIZE = 1000
DATA = pattern_bytes(SIZE)
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
PATH = "/dir/file.bin"


def serve(server: RangeHTTPServer, data: bytes = DATA, **faults: Any) -> ServedFile:
    return serve_file(server, PATH, data, Faults(**faults))


def get(url: str, timeout: float = 5.0, **headers: str) -> requests.Response:
    """GET with the given headers (underscores become dashes); the body is read."""
    hdrs = {name.replace("_", "-"): value for name, value in headers.items()}
    return requests.get(url, headers=hdrs, timeout=timeout)


def raw_request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket; returns status, headers (lower-case) and all bytes
    after the header block up to EOF, undecoded."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    lines = [f"{method} {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    buf = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            while chunk := sock.recv(65536):
                buf += chunk
        except ConnectionResetError:
            pass
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        hdrs[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), hdrs, body


@pytest.fixture
def served(rangeserver: RangeHTTPServer) -> ServedFile:
    return serve(rangeserver, last_modified=LAST_MODIFIED)


# --- plain GET and HEAD ----------------------------------------------------------------------


def test_whole_get(served: ServedFile) -> None:
    r = get(served.url)
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["Content-Length"] == str(SIZE)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] == '"v1"'
    assert r.headers["Last-Modified"] == LAST_MODIFIED
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Range" not in r.headers
    assert "Content-Encoding" not in r.headers
    (rec,) = served.requests
    assert (rec.method, rec.status, rec.body_bytes, rec.content_length) == ("GET", 200, SIZE, SIZE)
    assert rec.range_header is None and rec.content_range is None and rec.ranges == []


def test_head_has_get_headers_without_body(served: ServedFile) -> None:
    volatile = {"date", "server", "connection"}
    g = get(served.url)
    status, head_headers, body = raw_request(served.url, "HEAD")
    assert status == 200
    assert body == b""
    get_headers = {k.lower(): v for k, v in g.headers.items() if k.lower() not in volatile}
    assert {k: v for k, v in head_headers.items() if k not in volatile} == get_headers
    # Range is not defined for HEAD: ignored.
    status, ranged_headers, _ = raw_request(served.url, "HEAD", {"Range": "bytes=0-9"})
    assert status == 200
    assert ranged_headers["content-length"] == str(SIZE)
    assert "content-range" not in ranged_headers
    assert [r.method for r in served.requests] == ["GET", "HEAD", "HEAD"]
    assert served.ranges_requested() == []


def test_other_methods_get_405(served: ServedFile) -> None:
    r = requests.post(served.url, data=b"x", timeout=5)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-10", 990, 999),
        ("bytes=990-", 990, 999),
        ("bytes=0-", 0, 999),
        ("bytes=900-5000", 900, 999),
        ("bytes=0-999", 0, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=100-199", 100, 199),
        ("Bytes=10-19", 10, 19),
        ("bytes=007-010", 7, 10),
        ("bytes=10-19,", 10, 19),
        ("bytes=,10-19", 10, 19),
        ("bytes=10-19 , 2000-3000", 10, 19),
    ],
)
def test_single_range(served: ServedFile, header: str, start: int, end: int) -> None:
    r = get(served.url, Range=header)
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["ETag"] == '"v1"'
    (rec,) = served.gets()
    assert rec.range_header == header
    assert rec.content_range == r.headers["Content-Range"]
    assert rec.body_bytes == end - start + 1 == served.bytes_sent()
    assert served.ranges_requested()[0] == (start, end)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=1000-1000",
        "bytes=1000-2000",
        "bytes=5-3",
        "bytes=-0",
        "bytes=2000-3000",
        "bytes=1000-1001, 5-3, -0",
    ],
)
def test_unsatisfiable_range_gives_416(served: ServedFile, header: str) -> None:
    r = get(served.url, Range=header)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{SIZE}"
    assert r.headers["Content-Length"] == "0"
    assert r.content == b""
    assert served.gets()[0].content_range == f"bytes */{SIZE}"


def test_ranges_requested_are_resolved(served: ServedFile) -> None:
    for header in ["bytes=5-3", "bytes=1000-", "bytes=-0", "bytes=-20", "bytes=0-1,990-5000"]:
        get(served.url, Range=header)
    expected = [(5, 3), (1000, 999), (1000, 999), (980, 999), (0, 1), (990, 999)]
    assert served.ranges_requested() == expected


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=5-"])
def test_empty_file_range_gives_416(rangeserver: RangeHTTPServer, header: str) -> None:
    served = serve(rangeserver, b"")
    r = get(served.url, Range=header)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */0"
    whole = get(served.url)
    assert (whole.status_code, whole.content, whole.headers["Content-Length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=1-2-3",
        "items=0-1",
        "bytes 0-1",
        "bytes=",
        "bytes=,",
        "bytes= 0-1",
        "bytes=0 -1",
        "bytes=0x1-2",
        "bytes=--1",
        "bytes=1",
        "bytes=-",
        "bytes=+1-2",
        "bytes=0-1;x",
        "bytes=0-1,x",
        "=0-1",
        "by tes=0-1",
    ],
)
def test_invalid_range_is_ignored(served: ServedFile, header: str) -> None:
    r = get(served.url, Range=header)
    assert r.status_code == 200
    assert r.content == DATA
    assert "Content-Range" not in r.headers
    assert served.ranges_requested() == []


def test_multiple_ranges_give_multipart(served: ServedFile) -> None:
    r = get(served.url, Range="bytes=0-1, 990-,-5")
    assert r.status_code == 206
    assert r.headers["Content-Type"] == f"multipart/byteranges; boundary={BOUNDARY}"
    assert "Content-Range" not in r.headers
    expected = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: bytes {a}-{b}/{SIZE}\r\n\r\n".encode()
        + DATA[a : b + 1]
        + b"\r\n"
        for a, b in [(0, 1), (990, 999), (995, 999)]
    )
    assert r.content == expected + f"--{BOUNDARY}--\r\n".encode()
    assert r.headers["Content-Length"] == str(len(r.content))


def test_multiple_ranges_without_multipart_give_200(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, multipart=False)
    r = get(served.url, Range="bytes=0-1,5-6")
    assert (r.status_code, r.content) == (200, DATA)
    # A single range is still served as 206.
    assert get(served.url, Range="bytes=0-1").status_code == 206


def test_parse_and_resolve_helpers() -> None:
    assert parse_range_header("bytes=0-1,-5, 7-") == [(0, 1), (None, 5), (7, None)]
    assert parse_range_header("bytes=0-1,,") == [(0, 1)]
    assert parse_range_header("pages=0-1") is None
    assert resolve_range((0, None), 0) is None
    assert resolve_range((None, 3), 2) == (0, 1)
    assert resolve_range((3, 3), 4) == (3, 3)
    assert resolve_range((4, 4), 4) is None


# --- preconditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"v1"', 206),
        ('"v2"', 200),
        ('W/"v1"', 200),
        (LAST_MODIFIED, 206),
        ("Sun, 06 Nov 1994 08:49:38 GMT", 200),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 200),  # same date, different text: no exact match
        ("garbage", 200),
    ],
)
def test_if_range(served: ServedFile, if_range: str, status: int) -> None:
    r = get(served.url, Range="bytes=10-19", If_Range=if_range)
    assert r.status_code == status
    assert r.content == (DATA[10:20] if status == 206 else DATA)
    assert served.gets()[0].if_range == if_range


def test_if_range_never_matches_weak_or_missing_validator(rangeserver: RangeHTTPServer) -> None:
    weak = serve_file(rangeserver, "/weak", DATA, Faults(etag='W/"v1"'))
    assert get(weak.url, Range="bytes=0-0", If_Range='W/"v1"').status_code == 200
    assert get(weak.url, Range="bytes=0-0", If_Range='"v1"').status_code == 200
    bare = serve_file(rangeserver, "/bare", DATA, Faults(etag=None))
    r = get(bare.url, Range="bytes=0-0", If_Range='"v1"')
    assert r.status_code == 200
    assert "ETag" not in r.headers and "Last-Modified" not in r.headers
    assert get(bare.url, Range="bytes=0-0", If_Range=LAST_MODIFIED).status_code == 200


def test_if_range_without_range_is_ignored(served: ServedFile) -> None:
    r = get(served.url, If_Range='"v1"')
    assert (r.status_code, r.content) == (200, DATA)


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ('"v1"', 206),
        ("*", 206),
        ('"x", "v1"', 206),
        ('"v2"', 412),
        ('W/"v1"', 412),
        ('"v1', 412),
    ],
)
def test_if_match(served: ServedFile, if_match: str, status: int) -> None:
    r = get(served.url, Range="bytes=0-4", If_Match=if_match)
    assert r.status_code == status
    assert r.content == (DATA[:5] if status == 206 else b"")
    head_status, _, _ = raw_request(served.url, "HEAD", {"If-Match": if_match})
    assert head_status == (200 if status == 206 else 412)
    assert served.gets()[0].if_match == if_match


def test_if_none_match_and_dates(served: ServedFile) -> None:
    r = get(served.url, If_None_Match='W/"v1"')
    assert (r.status_code, r.headers["ETag"], r.content) == (304, '"v1"', b"")
    assert get(served.url, If_None_Match='"v2"').status_code == 200
    assert get(served.url, If_Modified_Since=LAST_MODIFIED).status_code == 304
    assert get(served.url, If_Modified_Since="Sun, 06 Nov 1994 08:49:36 GMT").status_code == 200
    older = "Sun, 06 Nov 1994 08:49:36 GMT"
    assert get(served.url, If_Unmodified_Since=older).status_code == 412
    assert get(served.url, If_Unmodified_Since=LAST_MODIFIED).status_code == 200


# --- faults ----------------------------------------------------------------------------------


def test_ignore_range(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, ignore_range=True)
    r = get(served.url, Range="bytes=10-19")
    assert (r.status_code, r.content) == (200, DATA)
    assert r.headers["Accept-Ranges"] == "bytes"  # still (falsely) advertised
    assert served.ranges_requested() == [(10, 19)]


def test_advertise_ranges_off(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, advertise_ranges=False)
    assert "Accept-Ranges" not in get(served.url).headers
    assert "accept-ranges" not in raw_request(served.url, "HEAD")[1]
    assert get(served.url, Range="bytes=0-0").status_code == 206


def test_head_status(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, head_status=405)
    status, headers, body = raw_request(served.url, "HEAD")
    assert (status, headers["allow"], body) == (405, "GET", b"")
    assert get(served.url).status_code == 200


def test_head_no_length(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, head_no_length=True)
    status, headers, _ = raw_request(served.url, "HEAD")
    assert status == 200 and "content-length" not in headers
    assert get(served.url).headers["Content-Length"] == str(SIZE)
    assert served.heads()[0].content_length is None


def test_chunked(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, chunked=True)
    r = get(served.url)
    assert (r.status_code, r.content) == (200, DATA)
    assert "Content-Length" not in r.headers
    assert r.headers["Transfer-Encoding"] == "chunked"
    r = get(served.url, Range="bytes=10-19")
    assert (r.status_code, r.content, r.headers["Content-Range"]) == (
        206,
        DATA[10:20],
        "bytes 10-19/1000",
    )
    assert "Content-Length" not in r.headers
    assert "content-length" not in raw_request(served.url, "HEAD")[1]


def test_wrong_range_start(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, wrong_range_start=1)
    r = get(served.url, Range="bytes=100-199")
    assert (r.status_code, r.headers["Content-Range"]) == (206, "bytes 101-200/1000")
    assert r.content == DATA[101:201]
    served.faults.wrong_range_start = 20
    r = get(served.url, Range="bytes=990-999")
    assert (r.headers["Content-Range"], r.content) == ("bytes 999-999/1000", DATA[999:])
    assert get(served.url).content == DATA  # 200 is not affected


def test_short_body(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, short_body=10)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(served.url)
    status, headers, body = raw_request(served.url, headers={"Range": "bytes=100-199"})
    assert (status, headers["content-length"]) == (206, "100")
    assert body == DATA[100:190]
    served.wait_idle()
    assert [(r.body_bytes, r.truncated) for r in served.gets()] == [(990, True), (90, True)]


def test_short_body_chunked_omits_last_chunk(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, short_body=10, chunked=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(served.url)
    _, headers, body = raw_request(served.url)
    assert headers["transfer-encoding"] == "chunked"
    assert body == f"{SIZE - 10:x}\r\n".encode() + DATA[: SIZE - 10] + b"\r\n"


def test_long_body(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, long_body=5)
    r = get(served.url, Range="bytes=0-9")
    assert (r.headers["Content-Range"], r.headers["Content-Length"]) == ("bytes 0-9/1000", "15")
    assert r.content == DATA[:15]
    served.faults.long_body = 10
    r = get(served.url, Range="bytes=995-999")
    assert r.content == DATA[995:] + bytes(10)  # nothing follows in the file: zero bytes
    assert get(served.url).content == DATA + bytes(10)


def test_gzip_if_asked(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, gzip_if_asked=True)
    packed = gzip.compress(DATA, mtime=0)
    r = get(served.url, Accept_Encoding="identity")
    assert (r.content, r.headers["ETag"], r.headers["Vary"]) == (DATA, '"v1"', "Accept-Encoding")
    assert "Content-Encoding" not in r.headers
    for accept in ["gzip", "gzip, deflate", "*", "br;q=1, gzip;q=0.5"]:
        r = get(served.url, Accept_Encoding=accept)
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["ETag"] == '"v1-gzip"'
        assert r.headers["Content-Length"] == str(len(packed))
        assert r.content == DATA  # requests decodes it
    for accept in ["gzip;q=0", "deflate", "identity, *;q=0", ""]:
        assert "Content-Encoding" not in get(served.url, Accept_Encoding=accept).headers
    # No Accept-Encoding at all: any coding is acceptable.
    _, headers, body = raw_request(served.url)
    assert (headers["content-encoding"], body) == ("gzip", packed)
    # Ranges count bytes of the gzip representation.
    status, headers, body = raw_request(served.url, headers={"Range": "bytes=0-9"})
    assert (status, body) == (206, packed[:10])
    assert headers["content-range"] == f"bytes 0-9/{len(packed)}"
    status, _, _ = raw_request(served.url, headers={"Range": "bytes=0-9", "If-Range": '"v1"'})
    assert status == 200


def test_gzip_always(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, gzip_always=True)
    status, headers, body = raw_request(served.url, headers={"Accept-Encoding": "identity"})
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == DATA
    _, head_headers, _ = raw_request(served.url, "HEAD", {"Accept-Encoding": "identity"})
    assert head_headers["content-encoding"] == "gzip"
    assert head_headers["content-length"] == str(len(body))


def test_content_disposition_and_validators(rangeserver: RangeHTTPServer) -> None:
    value = "attachment; filename*=UTF-8''%e2%82%ac.bin"
    served = serve(rangeserver, content_disposition=value, etag=None, last_modified=LAST_MODIFIED)
    r = get(served.url, Range="bytes=0-0")
    assert r.headers["Content-Disposition"] == value
    assert r.headers["Last-Modified"] == LAST_MODIFIED
    assert "ETag" not in r.headers
    assert raw_request(served.url, "HEAD")[1]["content-disposition"] == value


def test_rate_and_slow_throttle(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, slow={500: 2000.0})
    t0 = time.monotonic()
    assert get(served.url, Range="bytes=0-499").content == DATA[:500]
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    assert get(served.url, Range="bytes=500-999").content == DATA[500:]
    slow = time.monotonic() - t0
    assert slow >= 0.18  # 500 bytes at 2000 B/s: 0.25 s minus the first 50 ms slice
    assert fast < slow
    served.faults.slow = {}
    served.faults.rate = 4000.0
    t0 = time.monotonic()
    assert get(served.url).content == DATA
    assert time.monotonic() - t0 >= 0.18


def test_drop_after_first_k(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, drop_after=100, drop_first_k=1)
    status, headers, body = raw_request(served.url, headers={"Range": "bytes=200-999"})
    assert (status, headers["content-length"], body) == (206, "800", DATA[200:300])
    r = get(served.url, Range="bytes=200-999")
    assert (r.status_code, r.content) == (206, DATA[200:])
    served.faults.drop_first_k = None
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(served.url)


def test_stall_after_headers(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, stall_after_headers=0.3, stall_first_k=1)
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):  # read timeout while streaming
        get(served.url, timeout=0.1)
    assert time.monotonic() - t0 < 0.3
    r = get(served.url)  # only the first response stalls
    assert r.content == DATA
    served.faults.stall_first_k = None
    served.faults.stall_after_headers = 0.15
    t0 = time.monotonic()
    with requests.get(served.url, stream=True, timeout=5) as r:
        headers_at = time.monotonic() - t0
        assert r.raw.read() == DATA
    assert headers_at < 0.1 <= 0.14 <= time.monotonic() - t0


def test_stop_aborts_stall_quickly(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, stall_after_headers=30.0)
    parts = urlsplit(served.url)
    with socket.create_connection(("127.0.0.1", rangeserver.port), timeout=5) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        t0 = time.monotonic()
        rangeserver.stop()
        assert time.monotonic() - t0 < 1.0
        assert sock.recv(4096) == b""
    (rec,) = served.requests
    assert (rec.finished, rec.truncated, rec.body_bytes) == (True, True, 0)


def test_fail_first(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, fail_first=2, fail_status=429, retry_after="1")
    assert raw_request(served.url, "HEAD")[0] == 200  # HEAD does not count
    for _ in range(2):
        r = get(served.url, Range="bytes=0-0")
        assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
        assert r.headers["Content-Length"] == str(len(r.content))
    assert get(served.url, Range="bytes=0-0").status_code == 206
    assert [r.status for r in served.requests] == [200, 429, 429, 206]


def test_max_connections(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, max_connections=1, retry_after="2", stall_after_headers=0.3)
    served.faults.stall_first_k = 1
    with requests.get(served.url, stream=True, timeout=5) as held:
        assert held.status_code == 200
        r = get(served.url)
        assert (r.status_code, r.headers["Retry-After"]) == (503, "2")
        assert held.raw.read() == DATA
    assert get(served.url).status_code == 200
    assert served.max_in_flight == 1
    # A client that waits for each response to end never gets a spurious 503.
    assert all(get(served.url, Range=f"bytes={i}-{i}").status_code == 206 for i in range(20))
    assert all(get(served.url, Range="bytes=5-1").status_code == 416 for _ in range(5))


def test_max_connections_counts_only_gets_in_flight(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, max_connections=4, stall_after_headers=0.3, stall_first_k=4)
    with contextlib.ExitStack() as stack:
        held = [
            stack.enter_context(requests.get(served.url, stream=True, timeout=5)) for _ in "abcd"
        ]
        assert [r.status_code for r in held] == [200] * 4  # headers arrive before the stall
        assert [get(served.url).status_code for _ in range(3)] == [503] * 3
        assert raw_request(served.url, "HEAD")[0] == 200  # HEAD is not capped
        assert [r.raw.read() for r in held] == [DATA] * 4
    assert get(served.url).status_code == 200
    assert served.max_in_flight == 4
    assert "Retry-After" not in get(served.url).headers


def test_concurrent_connections(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver)
    barrier = threading.Barrier(16, timeout=5)
    # Every handler thread waits until all 16 requests are inside the server at once.

    def wait_for_all(rec: RequestRecord) -> None:
        barrier.wait()

    served.request_hook = wait_for_all
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fetch(i: int) -> None:
        r = get(served.url, Range=f"bytes={i * 10}-{i * 10 + 9}")
        with lock:
            results.append((i, r.content))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(i, DATA[i * 10 : i * 10 + 10]) for i in range(16)]


def test_errors_while_streaming_reach_the_test(
    rangeserver: RangeHTTPServer, served: ServedFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, n: int) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rangeserver_module._Body, "_count", broken)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(served.url)
    served.wait_idle()
    with pytest.raises(RuntimeError, match="boom"):
        rangeserver.check_handler_errors()
    assert served.requests[0].truncated


def test_change_after_bytes(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, change_after_bytes=500)
    r = get(served.url, Range="bytes=0-599")
    assert (r.content, r.headers["ETag"]) == (DATA[:600], '"v1"')
    r = get(served.url, Range="bytes=600-999", If_Range='"v1"')
    new = bytes((b + 1) % 256 for b in DATA)
    assert (r.status_code, r.headers["ETag"], r.content) == (200, '"v2"', new)
    assert served.data == new and served.etag == '"v2"'


def test_change_after_bytes_with_given_content(rangeserver: RangeHTTPServer) -> None:
    served = serve(
        rangeserver,
        change_after_bytes=0,
        new_data=b"other",
        new_etag=None,
        new_last_modified=LAST_MODIFIED,
    )
    r = get(served.url)
    assert (r.content, r.headers["Last-Modified"]) == (b"other", LAST_MODIFIED)
    assert "ETag" not in r.headers


def test_replace_and_data_setter(served: ServedFile) -> None:
    served.replace(b"0123456789", '"v9"')
    r = get(served.url, Range="bytes=-3")
    assert (r.content, r.headers["ETag"], r.headers["Content-Range"]) == (
        b"789",
        '"v9"',
        "bytes 7-9/10",
    )
    assert "Last-Modified" not in r.headers
    served.data = b"abcdefghij"  # same validators: a change the client cannot see
    r = get(served.url, Range="bytes=0-1", If_Range='"v9"')
    assert (r.status_code, r.content) == (206, b"ab")


# --- the request log and handler-thread assertions -------------------------------------------


def test_request_log(served: ServedFile) -> None:
    get(served.url, Range="bytes=0-9", If_Range='"v1"', If_Match="*", X_Test="yes")
    get(served.url, Range="bytes=-10")
    raw_request(served.url, "HEAD")
    first, second, head = served.requests
    assert isinstance(first, RequestRecord)
    assert (first.if_range, first.if_match, first.headers["x-test"]) == ('"v1"', "*", "yes")
    assert first.path == PATH
    assert second.content_range == "bytes 990-999/1000"
    assert (head.method, head.body_bytes, head.content_length) == ("HEAD", 0, SIZE)
    assert served.gets() == [first, second] and served.heads() == [head]
    assert served.ranges_requested() == [(0, 9), (990, 999)]
    assert served.bytes_sent() == 20
    assert served.wait_idle() and all(r.finished for r in served.requests)
    served.clear_log()
    assert served.requests == []


def test_request_hook_assertions_reach_the_test(
    rangeserver: RangeHTTPServer, served: ServedFile
) -> None:
    def hook(rec: RequestRecord) -> None:
        assert rec.headers.get("Accept-Encoding") == "identity", "client must ask for identity"

    served.request_hook = hook
    assert get(served.url, Accept_Encoding="identity").status_code == 200
    assert get(served.url, Accept_Encoding="gzip").status_code == 500
    with pytest.raises(AssertionError, match="client must ask for identity"):
        rangeserver.check_assertions()
    rangeserver.check_assertions()  # nothing else pending
    assert [r.status for r in served.requests] == [200, 500]


def test_several_files_on_one_server(rangeserver: RangeHTTPServer) -> None:
    a = serve_file(rangeserver, "/a.bin", b"aaaa")
    b = serve_file(rangeserver, "/b.bin", b"bbbb", Faults(ignore_range=True))
    assert get(a.url, Range="bytes=1-1").content == b"a"
    assert get(b.url, Range="bytes=1-1").content == b"bbbb"
    assert len(a.requests) == len(b.requests) == 1


# --- batch support: keep-alive, server-wide observation, a second host -----------------------


def connect(server: RangeHTTPServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.host, server.port, timeout=5)


def exchange(
    conn: http.client.HTTPConnection, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request on ``conn``; the response is read to its end (status, lower-case headers,
    body)."""
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_keep_alive_serves_many_requests_on_one_connection(
    keepalive_server: RangeHTTPServer,
) -> None:
    served = serve(keepalive_server)
    conn = connect(keepalive_server)
    try:
        status, headers, body = exchange(conn, PATH)
        assert (status, body) == (200, DATA)
        assert "connection" not in headers
        assert exchange(conn, PATH, Range="bytes=10-19")[::2] == (206, DATA[10:20])
        assert exchange(conn, PATH, "HEAD")[::2] == (200, b"")
        assert exchange(conn, PATH, Range="bytes=5-1")[0] == 416
        assert exchange(conn, PATH, If_None_Match='"v1"')[::2] == (304, b"")
        assert exchange(conn, PATH)[::2] == (200, DATA)
    finally:
        conn.close()
    assert keepalive_server.connections_opened == 1
    ids = {r.connection_id for r in served.requests}
    assert len(ids) == 1 and ids != {0}
    assert keepalive_server.requests == served.requests
    assert list(keepalive_server.requests_by_connection().values()) == [served.requests]


def test_keep_alive_with_requests_session(keepalive_server: RangeHTTPServer) -> None:
    files = serve_files(keepalive_server, {f"/f{i}.bin": pattern_bytes(100, i) for i in range(5)})
    with requests.Session() as session:
        for path, served in files.items():
            r = session.get(served.url, headers={"Range": "bytes=0-49"}, timeout=5)
            assert (r.status_code, r.content) == (206, pattern_bytes(100, int(path[2]))[:50])
    assert keepalive_server.connections_opened == 1
    assert len({r.connection_id for r in keepalive_server.requests}) == 1
    assert [r.path for r in keepalive_server.requests] == list(files)


def test_keep_alive_framing_and_closing(keepalive_server: RangeHTTPServer) -> None:
    chunked = serve_file(keepalive_server, "/chunked", DATA, Faults(chunked=True))
    short = serve_file(keepalive_server, "/short", DATA, Faults(short_body=10))
    plain = serve_file(keepalive_server, "/plain", DATA)
    conn = connect(keepalive_server)
    try:
        status, headers, body = exchange(conn, "/chunked")
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", DATA)
        assert exchange(conn, "/plain")[::2] == (200, DATA)
        # A response cut by a fault ends the connection.
        conn.request("GET", "/short")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
        conn.close()
        assert exchange(conn, "/plain")[::2] == (200, DATA)  # http.client reconnects
        # The client may ask to close.
        status, headers, _ = exchange(conn, "/plain", Connection="close")
        assert (status, headers["connection"]) == (200, "close")
        assert exchange(conn, "/plain")[0] == 200
    finally:
        conn.close()
    ids = [r.connection_id for r in keepalive_server.requests]
    assert ids[0] == ids[1] == ids[2] < ids[3] == ids[4] < ids[5]
    assert keepalive_server.connections_opened == 3
    assert keepalive_server.requests[2].truncated
    assert [len(f.requests) for f in (chunked, short, plain)] == [1, 1, 4]


def test_default_server_closes_every_connection(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver)
    conn = connect(rangeserver)
    try:
        for _ in range(2):
            status, headers, _ = exchange(conn, PATH)
            assert (status, headers["connection"]) == (200, "close")
    finally:
        conn.close()
    assert rangeserver.connections_opened == 2
    first, second = served.requests
    assert 0 < first.connection_id < second.connection_id


def test_keep_alive_needs_threads() -> None:
    with pytest.raises(ValueError, match="threaded"):
        RangeHTTPServer(threaded=False, keep_alive=True)


def test_stop_is_quick_with_an_idle_keep_alive_connection(
    keepalive_server: RangeHTTPServer,
) -> None:
    serve(keepalive_server)
    conn = connect(keepalive_server)
    try:
        assert exchange(conn, PATH)[0] == 200  # the connection stays open, idle
        assert conn.sock is not None
        stopper = threading.Thread(target=keepalive_server.stop)
        stopper.start()
        stopper.join(10.0)  # a hang guard, not a timing assertion
        assert not stopper.is_alive()
        assert conn.sock.recv(1) == b""  # the server has closed it
    finally:
        conn.close()
    assert not keepalive_server.is_running()


def test_max_concurrent_spans_all_files(rangeserver: RangeHTTPServer) -> None:
    files = serve_files(
        rangeserver, {f"/{name}.bin": DATA for name in "abc"}, Faults(rate=20_000.0)
    )
    barrier = threading.Barrier(3, timeout=5)
    # Each handler waits until all three requests are being answered at once.

    def wait_for_all(rec: RequestRecord) -> None:
        barrier.wait()

    for served in files.values():
        served.request_hook = wait_for_all
    results: list[bytes] = []

    def fetch(served: ServedFile) -> None:
        results.append(get(served.url).content)

    threads = [threading.Thread(target=fetch, args=(f,)) for f in files.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [DATA] * 3
    assert rangeserver.max_concurrent == 3
    assert [f.max_in_flight for f in files.values()] == [1, 1, 1]
    assert rangeserver.connections_opened == 3
    assert sorted(r.path for r in rangeserver.requests) == sorted(files)
    # Sequential requests (each read to its end) never overlap, throttled or not.
    for served in files.values():
        served.request_hook = None
    rangeserver.reset_stats()
    assert (rangeserver.max_concurrent, rangeserver.connections_opened) == (0, 0)
    assert rangeserver.requests == []
    for served in files.values():
        assert get(served.url, Range="bytes=0-199").status_code == 206
        assert raw_request(served.url, "HEAD")[0] == 200
    assert rangeserver.max_concurrent == 1
    assert rangeserver.connections_opened == len(rangeserver.requests) == 6
    assert len(files["/a.bin"].requests) == 3  # per-file logs are not reset


def test_second_host(rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer) -> None:
    one = serve(rangeserver, b"one")
    two = serve(rangeserver2, b"two")
    assert urlsplit(two.url).hostname == "127.0.0.2"
    assert get(one.url).content == b"one"
    assert get(two.url).content == b"two"
    assert get(two.url, Range="bytes=1-1").content == b"w"
    assert (rangeserver.connections_opened, rangeserver2.connections_opened) == (1, 2)
    assert [r.path for r in rangeserver2.requests] == [PATH, PATH]


def test_second_keep_alive_host(
    keepalive_server: RangeHTTPServer, keepalive_server2: RangeHTTPServer
) -> None:
    for server in (keepalive_server, keepalive_server2):
        serve(server)
        conn = connect(server)
        try:
            assert [exchange(conn, PATH)[0] for _ in range(3)] == [200] * 3
        finally:
            conn.close()
        assert server.connections_opened == 1
    assert keepalive_server2.host == "127.0.0.2"


def test_content_type(rangeserver: RangeHTTPServer) -> None:
    page = b"<html><body>Not found</body></html>"
    html = serve_file(rangeserver, "/photo.jpg", page, Faults(content_type="text/html"))
    r = get(html.url)
    assert (r.status_code, r.headers["Content-Type"], r.content) == (200, "text/html", page)
    assert get(html.url, Range="bytes=0-5").headers["Content-Type"] == "text/html"
    assert raw_request(html.url, "HEAD")[1]["content-type"] == "text/html"
    r = get(html.url, Range="bytes=0-0,2-2")
    assert r.headers["Content-Type"] == f"multipart/byteranges; boundary={BOUNDARY}"
    assert b"\r\nContent-Type: text/html\r\n" in r.content
    bare = serve_file(rangeserver, "/bare", DATA, Faults(content_type=None))
    assert "content-type" not in raw_request(bare.url)[1]
    assert "content-type" not in raw_request(bare.url, "HEAD")[1]
    assert Faults().content_type == "application/octet-stream"


def test_status_sequence(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, status_sequence=[429, 503, 200, 500, 304], retry_after="2")
    assert raw_request(served.url, "HEAD")[0] == 200  # HEAD does not count
    for code in (429, 503):
        r = get(served.url, Range="bytes=0-9")
        assert (r.status_code, r.headers["Retry-After"]) == (code, "2")
        assert r.headers["Content-Length"] == str(len(r.content))
    assert get(served.url, Range="bytes=0-9").content == DATA[:10]
    assert get(served.url).status_code == 500
    r = get(served.url)
    assert (r.status_code, r.content) == (304, b"")
    assert get(served.url).content == DATA  # past the end of the sequence: normal
    assert [r.status for r in served.gets()] == [429, 503, 206, 500, 304, 200]
    arrivals = [r.arrived for r in served.requests]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0


def test_status_sequence_before_fail_first(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, status_sequence=[200, 429], fail_first=1)
    assert [get(served.url).status_code for _ in range(3)] == [503, 429, 200]


def test_serve_files_copies_faults(rangeserver: RangeHTTPServer) -> None:
    faults = Faults(status_sequence=[503], slow={0: 1e6})
    files = serve_files(rangeserver, {"/x": b"x", "/y": b"y"}, faults)
    assert list(files) == ["/x", "/y"]
    x, y = files.values()
    assert x.faults is not faults and x.faults is not y.faults
    assert x.faults.status_sequence is not y.faults.status_sequence
    x.faults.status_sequence = None
    assert get(x.url).content == b"x"
    assert get(y.url).status_code == 503
    assert get(y.url).content == b"y"
    assert faults.status_sequence == [503]
    plain = serve_files(rangeserver, {"/z": b"z"})
    assert plain["/z"].faults == Faults()


def test_delay_headers(rangeserver: RangeHTTPServer) -> None:
    served = serve(rangeserver, delay_headers=0.15)
    t0 = time.monotonic()
    with requests.get(served.url, stream=True, timeout=5) as r:
        assert time.monotonic() - t0 >= 0.14  # nothing, not even headers, before the delay
        assert r.raw.read() == DATA
    served.faults.delay_headers = 30.0
    outcome: list[object] = []

    def fetch() -> None:
        try:
            outcome.append(get(served.url).status_code)
        except requests.exceptions.RequestException as exc:
            outcome.append(exc)

    fetcher = threading.Thread(target=fetch)
    fetcher.start()
    deadline = time.monotonic() + 5
    while len(served.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(served.requests) == 2
    assert rangeserver.max_concurrent == 1  # a delayed request counts from its arrival
    stopper = threading.Thread(target=rangeserver.stop)
    stopper.start()
    stopper.join(10.0)  # a hang guard, not a timing assertion
    fetcher.join(10.0)
    assert not stopper.is_alive() and not fetcher.is_alive()
    assert len(outcome) == 1  # the client got an answer or an error, it does not hang
    assert served.requests[1].finished
