"""Loopback test server: exact RFC 9110 range requests plus switchable faults.

This module is the oracle for the download tests, so it imports nothing from ``segdl``.

Server
------
``RangeHTTPServer(host="127.0.0.1", port=0, *, threaded=True, ssl_context=None,
keep_alive=False, send_buffer=None)`` is a pytest-httpserver ``HTTPServer`` (werkzeug dev
server, one thread per connection) with these changes: ``send_buffer`` sets ``SO_SNDBUF`` on
every accepted connection (None: the kernel's own, which on loopback grows to megabytes, so
that a body is "sent" long before the client reads it; a small one makes the ``sends`` times of
each ``RequestRecord`` follow the client's reads closely, e.g. to measure a speed limit);
``stop()`` first sets ``stopping`` so that throttled, stalled or delayed responses end within
50 ms, and shuts down the reading side of every open client connection, so that a thread
waiting for a request (an idle keep-alive connection, or a client that connected and sent
nothing) ends at once while a response being written is not cut by this; it then waits, at most
2 s in all, for every response still being sent and every connection thread. The accept loop
polls every 20 ms, so stopping is quick. The server keeps the ``ServedFile`` objects registered
on it (``files``), numbers its TCP connections and keeps server-wide statistics (below). One
server is one host:port.

Fixtures in ``conftest.py``, each a started server on an ephemeral port, stopped at teardown,
after which what handler threads reported is re-raised (``check_assertions()`` and
``check_handler_errors()``), then ``clear()``:

- ``rangeserver`` (also available as ``httpserver``): 127.0.0.1, ``keep_alive=False``.
- ``rangeserver2``: 127.0.0.2, ``keep_alive=False``: a second host (Linux routes all of
  127.0.0.0/8 to the loopback interface).
- ``keepalive_server`` / ``keepalive_server2``: ``keep_alive=True`` on 127.0.0.1 / 127.0.0.2.

Import it as ``from rangeserver import ...`` (pytest puts ``tests/`` on ``sys.path`` for the
rootdir conftest).  Helpers: ``pattern_bytes(size, seed=0)`` (deterministic content),
``parse_range_header(value)`` and ``resolve_range(spec, size)`` (the parser the server uses).
``Server`` and ``Date`` headers are added by werkzeug.

Connections and keep-alive
--------------------------
``keep_alive=False`` (default): werkzeug sends ``Connection: close`` on every response, so each
request uses a new TCP connection.

``keep_alive=True`` (needs ``threaded=True``, else ``ValueError``): HTTP/1.1 persistent
connections.  The ``Connection: close`` header is not sent, the connection stays open after
the response, and the next request on it is read and answered by the same thread (requests on
one connection are answered one after the other, pipelined ones in order).  Every response
is delimited: ``Content-Length``, or chunked transfer coding when there is none (the
``chunked`` fault); HEAD, 304 and the ``head_status`` answers have no body.  ``Connection:
close`` is still sent, and the connection closed after the response, when the request is
HTTP/1.0, asks for ``Connection: close``, carries a body (``Content-Length`` other than 0, or
``Transfer-Encoding``), or the server is stopping.  A response cut by a fault or by shutdown
(``short_body``, ``drop_after``, a stall or delay ended by ``stop()``, ...) ends its
connection, as without keep-alive.  There is no idle timeout: an idle connection stays open
until the client closes it or ``stop()``.

Connection numbering: every accepted TCP connection gets a ``connection_id``, 1, 2, 3, ... in
accept order, unique for the lifetime of the server object (never reset, also across
``stop()``/``start()``); every ``RequestRecord`` carries the id of the connection it came on, so
several records with one id show reuse.

Server-wide observation
-----------------------
Over all files of one server (one host:port), since construction or the last ``reset_stats()``:

- ``server.connections_opened``: number of TCP connections accepted.
- ``server.max_concurrent``: peak number of GET and HEAD requests being answered at once, any
  file.  A request counts from its arrival (request line and headers read, before
  ``request_hook`` and ``delay_headers``) until just before its last body chunk is written
  (for a response without body, e.g. HEAD or 304: just before its headers are written), or
  until it is aborted or fails.  As with ``max_in_flight``, a client that reads each response
  to its end before sending the next request never produces a false overlap.  Every status
  counts (also 416, 503, 304, ...); other methods (405) do not.
- ``server.requests``: snapshot list of every ``RequestRecord`` of every file of this server, in
  arrival order (requests to unregistered paths are not recorded).
- ``server.requests_by_connection()``: ``{connection_id: [RequestRecord, ...]}`` from
  ``requests``, each list in arrival order.
- ``server.reset_stats()``: ``connections_opened`` becomes 0, ``requests`` is emptied and
  ``max_concurrent`` restarts from the number of requests being answered at that moment.
  Connection ids, per-file logs and ``max_in_flight`` are not affected.
- ``server.wait_idle(timeout=2.0)``: ``ServedFile.wait_idle`` for every file with one overall
  deadline; False on timeout.

Files
-----
``serve_file(server, path, data, faults=None) -> ServedFile`` answers GET and HEAD for ``path``
(any query string); other methods get 405.
``serve_files(server, files, faults=None) -> dict[str, ServedFile]`` calls ``serve_file`` for
each ``{path: data}`` of the mapping ``files`` (result in the same order); each file gets its
own ``copy.deepcopy`` of ``faults`` (None: default ``Faults()`` each), so changing one file's
faults later does not affect the others.  ``ServedFile`` members:

- ``url``; ``data`` (settable: new content, *same* validators); ``etag``;
  ``last_modified``; ``faults`` (the ``Faults`` object; may be changed between requests);
  ``replace(data, etag, last_modified=None)`` (new content and validators).
- ``requests``: snapshot list of ``RequestRecord`` (every request, in arrival order);
  ``gets()``, ``heads()``, ``ranges_requested()``, ``bytes_sent()``, ``max_in_flight``
  (peak of concurrent GETs admitted), ``clear_log()``, ``wait_idle(timeout)``.
- ``request_hook``: optional ``Callable[[RequestRecord], None]`` run in the handler thread
  before answering; an ``AssertionError`` raised there is kept by the server (re-raised by
  ``check_assertions()`` at teardown) and the client gets a 500.  Any other exception in a
  handler, also while streaming, is kept in ``handler_errors``.

``RequestRecord`` fields: ``method``, ``path``, ``headers`` (werkzeug ``Headers`` copy,
case-insensitive), ``range_header``, ``if_range``, ``if_match``, ``ranges`` (see below),
``status``, ``content_range`` and ``content_length`` (header values sent, or None),
``body_bytes`` (body bytes written to the socket; a chunk whose write failed is not
counted), ``truncated`` (the server cut the connection before the end of the body: fault or
shutdown), ``client_gone`` (writing failed), ``finished``, ``connection_id`` (see above),
``arrived`` (``time.monotonic()`` when the request arrived, before ``request_hook`` and
``delay_headers``; e.g. to check a client's backoff after a 429), ``sends`` (one
``(time.monotonic(), n)`` per body chunk, taken once its write to the socket returned: the
bytes sent over time, e.g. to measure a client's speed limit from the server's side).
``body_bytes`` is counted as chunks are written, so it is exact as soon as the client has read
them; ``finished`` may lag slightly behind the client: use ``wait_idle()``.

Range semantics (RFC 9110 section 14)
-------------------------------------
Only GET uses Range; HEAD ignores it and answers with exactly the headers of a 200 GET.

- The value must match ``bytes=range-set`` exactly (unit case-insensitive, optional
  whitespace only around commas, empty list elements skipped).  Anything else (another unit,
  ``other-range``, non-digits, missing ``=``) is invalid and the Range header is ignored: 200.
- ``a-b``: bytes a..b, b clipped to size-1; ``a-``: a..size-1; ``-n``: the last n bytes (all of
  them when n >= size).  ``a-b`` with b < a, a >= size, ``-0``, and any range of an empty
  representation are unsatisfiable.
- No satisfiable range: 416 with ``Content-Range: bytes */size``.  One: 206 with
  ``Content-Range: bytes a-b/size`` and the exact ``Content-Length``.  Two or more: 206
  ``multipart/byteranges; boundary=RANGESERVER_BOUNDARY`` with one part per satisfiable range
  in request order (no coalescing), or 200 with the whole body when ``Faults.multipart`` is
  False.
- ``ranges_requested()`` lists, for each GET with a valid Range header, every range-spec as
  ``(start, end_inclusive)`` resolved against the size at request time (end clipped to
  size-1, suffixes made absolute); unsatisfiable specs give start > end.

Preconditions (RFC 9110 section 13.2.2 order, GET and HEAD): If-Match (strong comparison,
``*`` matches) fails -> 412; else If-Unmodified-Since older than Last-Modified -> 412;
If-None-Match (weak comparison) matches -> 304; else If-Modified-Since not older than
Last-Modified -> 304.  If-Range (GET with Range only): an entity-tag must strongly match the
ETag (a weak tag never matches), a date must equal the Last-Modified value character for
character; otherwise the Range header is ignored and the whole body is sent with 200.

Content coding: identity unless a gzip switch is on; a gzip representation is
``gzip.compress(data, mtime=0)``, ranges and Content-Length count its bytes, and its ETag is
the configured one with ``-gzip`` appended inside the quotes (different representation,
different strong validator).  No Accept-Encoding header at all means any coding is acceptable
(RFC 9110 section 12.5.3).

Faults (all off by default)
---------------------------
Body faults (``rate``, ``slow``, ``stall_*``, ``drop_*``, ``short_body``, ``long_body``) apply
to 200 and 206 GET answers only.  Error answers (412, 416, 503, ...) always carry a
Content-Length.

- ``ignore_range``: Range is ignored, 200 with the whole body.
- ``advertise_ranges`` (default True): ``Accept-Ranges: bytes`` on 200/206/HEAD; False omits it
  (ranges still honoured unless ``ignore_range``).
- ``multipart`` (default True): see above.
- ``head_status``: HEAD answered with this status, no body (with ``Allow: GET`` for 405).
- ``head_no_length``: HEAD without Content-Length.
- ``chunked``: no Content-Length on 200/206 (werkzeug then uses chunked transfer coding) nor on
  HEAD.
- ``wrong_range_start``: a single-range 206 serves and announces a range shifted by this many
  bytes (clamped to the representation), e.g. asked 100-199, answers 101-200.
- ``short_body``: send this many bytes fewer than the body, then close the connection (with
  chunked coding the terminating chunk is not sent either).
- ``long_body``: append this many extra bytes (the bytes that follow in the file, then zero
  bytes); Content-Length counts them, Content-Range does not change.
- ``gzip_if_asked``: gzip when Accept-Encoding allows it (``Vary: Accept-Encoding``).
- ``gzip_always``: gzip even when the client asked for identity.
- ``content_disposition``: raw Content-Disposition value on 200/206/HEAD.
- ``content_type`` (default ``"application/octet-stream"``): Content-Type value on 200/206/HEAD
  and in each part of a multipart answer; None: no Content-Type at all.  Error answers have no
  Content-Type.  E.g. ``Faults(content_type="text/html")`` with an HTML body: an error page
  served with status 200 where a file was expected.
- ``etag`` (default ``'"v1"'``) / ``last_modified`` (an HTTP-date string, default None):
  initial validators (None: header not sent).
- ``rate``: bytes/second throttle for every response; ``slow``: {range start: bytes/second} for
  responses whose (first) range starts there (0 for 200); the lower of the two applies.
- ``drop_after``: close the connection after this many body bytes; ``drop_first_k``: only for
  the first k 200/206 answers (None: all).
- ``stall_after_headers``: send the headers, then nothing for this many seconds, then the
  body; ``stall_first_k``: only for the first k 200/206 answers (None: all).
- ``fail_first``, ``fail_status`` (503), ``retry_after``: the first k GETs are answered with
  fail_status (plus ``Retry-After: retry_after`` when set).  HEAD is not counted.
- ``status_sequence`` (list of int, or None): GET number n of this file (0-based, counted
  like ``fail_first``: every GET since the file was served, HEAD not counted, never reset)
  is answered with ``status_sequence[n]`` when n < len; a 2xx entry means "answer normally".
  Any other code is answered with that status, ``Retry-After: retry_after`` when set, and a
  short text body with Content-Length (304: no body, no Content-Length), e.g. ``[429, 429,
  200]`` or ``[503, 200, 500]``.  It is consulted before ``fail_first`` and
  ``max_connections``: a GET whose entry is 2xx (or past the end) can still be failed by them.
  Use codes from 300 to 599 for failures.
- ``delay_headers`` (seconds, default 0): every GET and HEAD of this file waits this long
  before anything is answered (no status line, no headers), after ``request_hook`` and before
  the file's state is looked at (validators, ``fail_first``, ``status_sequence``,
  ``max_connections`` admission happen after the delay); a "slow host".  The request counts in
  ``server.max_concurrent`` during the delay.  ``stop()`` ends the delay at once; the request
  is then answered and its body aborted.
- ``max_connections``: a GET arriving while this many GETs are in flight gets 503 (with
  Retry-After when ``retry_after`` is set).  A GET stops counting just before its last body
  chunk is written, so a client that waits for a response to end never sees a false 503.
- ``change_after_bytes``: once this many body bytes of this file were sent in total, the next
  request sees ``new_data`` (default: every byte + 1 mod 256, same length) with ETag
  ``new_etag`` (default ``'"v2"'``) and Last-Modified ``new_last_modified`` (default None).
  A response already running keeps the old content.

Sleeps are sliced (at most 50 ms) on, or wait for, the server's ``stopping`` event, so shutdown
never hangs.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

from pytest_httpserver import HTTPServer, HTTPServerError
from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "BOUNDARY",
    "Faults",
    "RangeHTTPServer",
    "RequestRecord",
    "ServedFile",
    "parse_range_header",
    "pattern_bytes",
    "resolve_range",
    "serve_file",
    "serve_files",
]

BOUNDARY = "RANGESERVER_BOUNDARY"
CHUNK = 64 * 1024
SLICE = 0.05  # longest single sleep, seconds

RangeSpec = tuple[int | None, int | None]
"""(first, last) for ``first-[last]``; (None, n) for the suffix range ``-n``."""


@dataclass
class Faults:
    """Switches that make a ServedFile misbehave; see the module docstring."""

    ignore_range: bool = False
    advertise_ranges: bool = True
    multipart: bool = True
    head_status: int | None = None
    head_no_length: bool = False
    chunked: bool = False
    wrong_range_start: int = 0
    short_body: int = 0
    long_body: int = 0
    gzip_if_asked: bool = False
    gzip_always: bool = False
    content_disposition: str | None = None
    etag: str | None = '"v1"'
    last_modified: str | None = None
    slow: dict[int, float] = field(default_factory=dict)
    rate: float | None = None
    drop_after: int | None = None
    drop_first_k: int | None = None
    stall_after_headers: float = 0
    stall_first_k: int | None = None
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    max_connections: int | None = None
    change_after_bytes: int | None = None
    new_data: bytes | None = None
    new_etag: str | None = '"v2"'
    new_last_modified: str | None = None
    content_type: str | None = "application/octet-stream"
    status_sequence: list[int] | None = None
    delay_headers: float = 0


@dataclass
class RequestRecord:
    """One request as the server saw and answered it."""

    method: str
    path: str
    headers: Headers
    range_header: str | None
    if_range: str | None
    if_match: str | None
    ranges: list[tuple[int, int]] = field(default_factory=list)
    status: int = 0
    content_range: str | None = None
    content_length: int | None = None
    body_bytes: int = 0
    truncated: bool = False
    client_gone: bool = False
    finished: bool = False
    connection_id: int = 0
    arrived: float = 0.0
    sends: list[tuple[float, int]] = field(default_factory=list)


# --- pure helpers --------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
_ETAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')


def pattern_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random test content."""
    return random.Random(seed).randbytes(size)


def parse_range_header(value: str) -> list[RangeSpec] | None:
    """Parse a Range value; None when it is not a valid ``bytes`` ranges-specifier."""
    unit, eq, range_set = value.strip(" \t").partition("=")
    if not eq or not _TOKEN.fullmatch(unit) or unit.lower() != "bytes":
        return None
    elements = range_set.split(",")
    specs: list[RangeSpec] = []
    for i, raw in enumerate(elements):
        element = raw
        if i > 0:
            element = element.lstrip(" \t")
        if i < len(elements) - 1:
            element = element.rstrip(" \t")
        if not element:
            continue
        first, dash, last = element.partition("-")
        if not dash:
            return None
        if not first:
            if not _DIGITS.fullmatch(last):
                return None
            specs.append((None, int(last)))
        else:
            if not _DIGITS.fullmatch(first) or (last and not _DIGITS.fullmatch(last)):
                return None
            specs.append((int(first), int(last) if last else None))
    return specs or None


def resolve_range(spec: RangeSpec, size: int) -> tuple[int, int] | None:
    """Satisfiable part of a range-spec as (start, end_inclusive), or None."""
    first, last = spec
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return None
        return max(0, size - last), size - 1
    if (last is not None and last < first) or first >= size:
        return None
    return first, size - 1 if last is None else min(last, size - 1)


def _nominal_range(spec: RangeSpec, size: int) -> tuple[int, int]:
    first, last = spec
    if first is None:
        assert last is not None
        return max(0, size - last), size - 1
    return first, size - 1 if last is None else min(last, size - 1)


def _gzip_acceptable(value: str | None) -> bool:
    if value is None:
        return True
    q_gzip: float | None = None
    q_star: float | None = None
    for item in value.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    q = 0.0
        if coding.lower() in ("gzip", "x-gzip"):
            q_gzip = q
        elif coding == "*":
            q_star = q
    if q_gzip is not None:
        return q_gzip > 0
    return q_star is not None and q_star > 0


def _parse_etag(value: str) -> tuple[bool, str] | None:
    m = _ETAG.fullmatch(value)
    return (m.group(1) is not None, m.group(2)) if m else None


def _parse_etag_list(value: str) -> list[tuple[bool, str]]:
    tags: list[tuple[bool, str]] = []
    pos = 0
    while pos < len(value):
        if value[pos] in " \t,":
            pos += 1
            continue
        m = _ETAG.match(value, pos)
        if not m:
            break
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
        if pos < len(value) and value[pos] != ",":
            break
    return tags


def _etag_matches(header: str, etag: str | None, *, weak: bool) -> bool:
    if header.strip() == "*":
        return True
    current = _parse_etag(etag) if etag is not None else None
    if current is None:
        return False
    for tag_weak, opaque in _parse_etag_list(header):
        if opaque == current[1] and (weak or not (tag_weak or current[0])):
            return True
    return False


def _parse_date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _if_range_true(value: str, etag: str | None, last_modified: str | None) -> bool:
    value = value.strip()
    if '"' in value[:3]:
        tag = _parse_etag(value)
        current = _parse_etag(etag) if etag is not None else None
        return (
            tag is not None
            and current is not None
            and not tag[0]
            and not current[0]
            and tag[1] == current[1]
        )
    return last_modified is not None and value == last_modified.strip()


def _gzip_etag(etag: str | None) -> str | None:
    if etag is None or not etag.endswith('"'):
        return etag
    return etag[:-1] + '-gzip"'


def _shifted(data: bytes) -> bytes:
    return data.translate(bytes((i + 1) & 0xFF for i in range(256)))


# --- server --------------------------------------------------------------------------------

_CONNECTION_ID = "rangeserver.connection_id"  # WSGI environ key set by _RequestHandler


def _shut_read(sock: socket.socket) -> None:
    """Wake a thread blocked reading ``sock`` (it sees EOF); writing still works."""
    with contextlib.suppress(OSError):
        # The plain socket method, so that a TLS socket keeps its TLS state for writing.
        socket.socket.shutdown(sock, socket.SHUT_RD)


def _has_request_body(headers: Message) -> bool:
    length = headers.get("Content-Length")
    return headers.get("Transfer-Encoding") is not None or (
        length is not None and length.strip() != "0"
    )


class _NoDrain:
    """Stands in for ``rfile`` while werkzeug drains the socket after a response.

    werkzeug's ``run_wsgi`` reads whatever the client sent after the request (it assumes the
    connection is closed next); on a persistent connection that would swallow the next request.
    """

    def read(self, size: int = -1) -> bytes:
        return b""


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler plus connection numbering and optional HTTP/1.1 keep-alive.

    ``start()`` makes a subclass per server that sets ``owner`` and ``keep_alive`` (and, for
    keep-alive, ``protocol_version``), so werkzeug's handler class itself is never changed.
    """

    owner: ClassVar[RangeHTTPServer]
    keep_alive: ClassVar[bool] = False
    connection_id = 0
    _persist = False
    _saved_rfile: Any = None

    def setup(self) -> None:
        super().setup()
        self.connection_id = self.owner._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._connection_closed(self.connection_id)

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        environ[_CONNECTION_ID] = self.connection_id
        self._persist = (
            self.keep_alive
            and not self.close_connection  # HTTP/1.1 without "Connection: close"
            and self.request_version == "HTTP/1.1"
            and not _has_request_body(self.headers)
        )
        if self._persist:
            self._saved_rfile = self.rfile  # environ["wsgi.input"] keeps the real one
            self.rfile = _NoDrain()  # type: ignore[assignment]
        return environ

    def run_wsgi(self) -> None:
        try:
            super().run_wsgi()
        finally:
            if self._saved_rfile is not None:
                self.rfile = self._saved_rfile
                self._saved_rfile = None
            self._persist = False

    def send_header(self, keyword: str, value: str) -> None:
        if (
            self._persist
            and keyword.lower() == "connection"
            and value.lower() == "close"
            and not self.owner.stopping.is_set()
        ):
            return  # werkzeug closes every connection; this one stays open
        super().send_header(keyword, value)


class _Slot:
    """One GET/HEAD being answered, for RangeHTTPServer.max_concurrent; release() is idempotent."""

    def __init__(self, server: RangeHTTPServer) -> None:
        self._server = server
        self._held = True

    def release(self) -> None:
        server = self._server
        with server._stats:
            if self._held:
                self._held = False
                server._concurrent -= 1


class RangeHTTPServer(HTTPServer):
    """Threaded pytest-httpserver whose stop() aborts slow responses instead of hanging."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threaded: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        keep_alive: bool = False,
        send_buffer: int | None = None,
    ) -> None:
        if keep_alive and not threaded:
            raise ValueError("keep_alive=True needs threaded=True")
        super().__init__(host=host, port=port, threaded=threaded, ssl_context=ssl_context)
        self.keep_alive = keep_alive
        self.send_buffer = send_buffer
        self.stopping = threading.Event()
        self.files: list[ServedFile] = []
        self._stats = threading.Condition()
        self._last_connection_id = 0
        self._open_connections: dict[int, socket.socket] = {}
        self._connections_opened = 0
        self._concurrent = 0
        self._max_concurrent = 0
        self._requests: list[RequestRecord] = []

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)

    def start(self) -> None:
        # pytest-httpserver's start() without its readiness check (startup_timeout is None
        # here), with our request handler.
        if self.is_running():
            raise HTTPServerError("Server is already running")
        self.stopping.clear()
        attrs: dict[str, Any] = {"owner": self, "keep_alive": self.keep_alive}
        if self.keep_alive:
            attrs["protocol_version"] = "HTTP/1.1"
        handler = type("RangeRequestHandler", (_RequestHandler,), attrs)
        self.server = make_server(
            self.host,
            self.port,
            Request.application(self.application),
            threaded=self.threaded,
            request_handler=handler,
            ssl_context=self.ssl_context,
        )
        self.port = self.server.port
        self.server_thread = threading.Thread(target=self.thread_target, daemon=True)
        self.server_thread.start()

    def stop(self) -> None:
        with self._stats:
            self.stopping.set()
            sockets = list(self._open_connections.values())
        for sock in sockets:
            _shut_read(sock)
        super().stop()
        deadline = time.monotonic() + 2.0
        for served in self.files:
            served.wait_idle(max(0.0, deadline - time.monotonic()))
        with self._stats:
            self._stats.wait_for(
                lambda: not self._open_connections, max(0.0, deadline - time.monotonic())
            )

    def clear(self) -> None:
        super().clear()
        self.files.clear()

    # --- server-wide observation ---

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since construction or the last reset_stats()."""
        with self._stats:
            return self._connections_opened

    @property
    def max_concurrent(self) -> int:
        """Peak number of GET/HEAD requests being answered at once, over all files."""
        with self._stats:
            return self._max_concurrent

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request to any file of this server, in arrival order (a snapshot)."""
        with self._stats:
            return list(self._requests)

    def requests_by_connection(self) -> dict[int, list[RequestRecord]]:
        """``requests`` grouped by ``connection_id`` (in order of first use)."""
        grouped: dict[int, list[RequestRecord]] = {}
        for record in self.requests:
            grouped.setdefault(record.connection_id, []).append(record)
        return grouped

    def reset_stats(self) -> None:
        """Zero connections_opened, empty requests, and restart max_concurrent from now."""
        with self._stats:
            self._connections_opened = 0
            self._requests.clear()
            self._max_concurrent = self._concurrent

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no response of any file is being sent; False on timeout."""
        deadline = time.monotonic() + timeout
        return all(served.wait_idle(max(0.0, deadline - time.monotonic())) for served in self.files)

    def _connection_opened(self, sock: socket.socket) -> int:
        if self.send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        with self._stats:
            self._last_connection_id += 1
            connection_id = self._last_connection_id
            self._connections_opened += 1
            self._open_connections[connection_id] = sock
            stopping = self.stopping.is_set()
        if stopping:
            _shut_read(sock)
        return connection_id

    def _connection_closed(self, connection_id: int) -> None:
        with self._stats:
            self._open_connections.pop(connection_id, None)
            self._stats.notify_all()

    def _arrived(self, record: RequestRecord) -> _Slot | None:
        with self._stats:
            self._requests.append(record)
            if record.method not in ("GET", "HEAD"):
                return None
            self._concurrent += 1
            self._max_concurrent = max(self._max_concurrent, self._concurrent)
        return _Slot(self)


class _RawResponse(Response):
    """A werkzeug Response that sends exactly our status, headers and body stream."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: _Body) -> None:
        super().__init__(status=status, headers=headers)
        self._raw_headers = headers
        self._raw_body = body

    @property
    def stream_body(self) -> _Body:
        return self._raw_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            phrase = HTTPStatus(self.status_code).phrase
        except ValueError:
            phrase = "Status"
        self._raw_body.start(environ.get("werkzeug.socket"))
        start_response(f"{self.status_code} {phrase}", self._raw_headers)
        return self._raw_body


class _Body:
    """Response body stream: stalls, throttles, truncates and accounts for sent bytes."""

    def __init__(
        self,
        served: ServedFile,
        record: RequestRecord,
        body: bytes,
        *,
        admitted: bool = False,
        cut: int | None = None,
        stall: float = 0,
        rate: float | None = None,
    ) -> None:
        self._served = served
        self._record = record
        self._body = body
        self._admitted = admitted
        self._cut = cut
        self._stall = stall
        self._rate = rate
        self._sock: socket.socket | None = None
        self._done = False
        self.slot: _Slot | None = None  # set by ServedFile.handle for GET and HEAD
        self._gen = self._generate()

    def start(self, sock: socket.socket | None) -> None:
        self._sock = sock
        with self._served._cond:
            self._served._active += 1

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    def close(self) -> None:
        try:
            self._gen.close()
        finally:
            self._finish()

    def _release(self) -> None:
        """Stop counting for max_connections and max_concurrent (before the last chunk)."""
        served = self._served
        with served._cond:
            if self._admitted:
                self._admitted = False
                served._in_flight -= 1
        if self.slot is not None:
            self.slot.release()

    def _finish(self) -> None:
        served = self._served
        if self.slot is not None:
            self.slot.release()
        with served._cond:
            if self._done:
                return
            self._done = True
            if self._admitted:
                self._admitted = False
                served._in_flight -= 1
            self._record.finished = True
            served._active -= 1
            served._cond.notify_all()

    def _abort(self) -> None:
        self._record.truncated = True
        self._release()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _sleep_until(self, deadline: float) -> bool:
        """Sleep in short slices; False when the server is stopping."""
        stopping = self._served._stopping
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not stopping.is_set()
            if stopping.wait(min(SLICE, remaining)):
                return False

    def _count(self, n: int) -> None:
        with self._served._cond:
            self._record.body_bytes += n
            self._served._total_sent += n

    def _generate(self) -> Generator[bytes, None, None]:
        try:
            body = self._body
            limit = len(body) if self._cut is None else max(0, min(self._cut, len(body)))
            if limit == 0:
                self._release()
            yield b""  # werkzeug sends the status line and headers now
            if self._stall > 0 and not self._sleep_until(time.monotonic() + self._stall):
                self._abort()
                return
            rate = self._rate
            step = CHUNK if rate is None else max(1, min(CHUNK, int(rate * SLICE)))
            t0 = time.monotonic()
            pos = 0
            while pos < limit:
                if self._served._stopping.is_set():
                    self._abort()
                    return
                n = min(step, limit - pos)
                if pos + n >= limit:
                    self._release()
                self._count(n)
                try:
                    yield body[pos : pos + n]
                except GeneratorExit:
                    self._count(-n)
                    self._record.client_gone = True
                    raise
                self._record.sends.append((time.monotonic(), n))  # written: werkzeug asks on
                pos += n
                if rate is not None and pos < limit and not self._sleep_until(t0 + pos / rate):
                    self._abort()
                    return
            if limit < len(body):
                self._abort()
        except Exception as exc:
            self._served._server.handler_errors.append(exc)
            self._abort()


class ServedFile:
    """One file served by a RangeHTTPServer; see the module docstring."""

    def __init__(
        self, server: RangeHTTPServer, path: str, data: bytes, faults: Faults | None = None
    ) -> None:
        self._server = server
        self._stopping = server.stopping
        self.path = path
        self.url = server.url_for(path)
        self.faults = faults if faults is not None else Faults()
        self.request_hook: Callable[[RequestRecord], None] | None = None
        self._cond = threading.Condition()
        self._data = bytes(data)
        self._etag = self.faults.etag
        self._last_modified = self.faults.last_modified
        self._version = 0
        self._gzip_cache: tuple[int, bytes] | None = None
        self._changed = False
        self._requests: list[RequestRecord] = []
        self._get_count = 0
        self._body_responses = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._active = 0
        self._total_sent = 0

    # --- content ---

    @property
    def data(self) -> bytes:
        with self._cond:
            return self._data

    @data.setter
    def data(self, value: bytes) -> None:
        """New content with unchanged ETag and Last-Modified (a sneaky change)."""
        with self._cond:
            self._data = bytes(value)
            self._version += 1

    @property
    def etag(self) -> str | None:
        with self._cond:
            return self._etag

    @property
    def last_modified(self) -> str | None:
        with self._cond:
            return self._last_modified

    def replace(self, data: bytes, etag: str | None, last_modified: str | None = None) -> None:
        """New content with new validators (None: header not sent)."""
        with self._cond:
            self._data = bytes(data)
            self._etag = etag
            self._last_modified = last_modified
            self._version += 1

    # --- log ---

    @property
    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._requests)

    def gets(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == "GET"]

    def heads(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == "HEAD"]

    def ranges_requested(self) -> list[tuple[int, int]]:
        return [rng for r in self.gets() for rng in r.ranges]

    def bytes_sent(self) -> int:
        with self._cond:
            return sum(r.body_bytes for r in self._requests)

    @property
    def max_in_flight(self) -> int:
        with self._cond:
            return self._max_in_flight

    def clear_log(self) -> None:
        with self._cond:
            self._requests.clear()

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no response of this file is being sent; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout)

    # --- request handling ---

    def handle(self, request: Request) -> Response:
        record = RequestRecord(
            method=request.method,
            path=request.path,
            headers=Headers(request.headers),
            range_header=request.headers.get("Range"),
            if_range=request.headers.get("If-Range"),
            if_match=request.headers.get("If-Match"),
            connection_id=request.environ.get(_CONNECTION_ID, 0),
            arrived=time.monotonic(),
        )
        with self._cond:
            self._requests.append(record)
        slot = self._server._arrived(record)
        try:
            if self.request_hook is not None:
                self.request_hook(record)
            delay = self.faults.delay_headers
            if delay > 0 and record.method in ("GET", "HEAD"):
                self._stopping.wait(delay)  # returns at once when the server stops
            response = self._respond(request, record)
            response.stream_body.slot = slot
            return response
        except BaseException:
            if slot is not None:
                slot.release()
            record.status = 500
            record.finished = True
            raise

    def _plain(
        self,
        record: RequestRecord,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        admitted: bool = False,
        length: bool = True,
    ) -> _RawResponse:
        headers = list(headers or [])
        if length:
            headers.append(("Content-Length", str(len(body))))
            record.content_length = len(body)
        record.status = status
        for name, value in headers:
            if name == "Content-Range":
                record.content_range = value
        return _RawResponse(status, headers, _Body(self, record, body, admitted=admitted))

    def _respond(self, request: Request, record: RequestRecord) -> _RawResponse:
        f = self.faults
        method = request.method
        if method not in ("GET", "HEAD"):
            return self._plain(record, 405, [("Allow", "GET, HEAD")])
        if method == "HEAD" and f.head_status is not None:
            extra = [("Allow", "GET")] if f.head_status == 405 else []
            return self._plain(record, f.head_status, extra, length=False)

        retry = [("Retry-After", f.retry_after)] if f.retry_after is not None else []
        admitted = False
        with self._cond:
            if (
                f.change_after_bytes is not None
                and not self._changed
                and self._total_sent >= f.change_after_bytes
            ):
                self._changed = True
                self._data = f.new_data if f.new_data is not None else _shifted(self._data)
                self._etag = f.new_etag
                self._last_modified = f.new_last_modified
                self._version += 1
            data, etag, last_modified, version = (
                self._data,
                self._etag,
                self._last_modified,
                self._version,
            )
            if method == "GET":
                index = self._get_count  # 0-based number of this GET
                self._get_count += 1
                sequence = f.status_sequence
                if sequence is not None and index < len(sequence):
                    code = sequence[index]
                    if code == 304:
                        return self._plain(record, code, retry, length=False)
                    if not 200 <= code < 300:
                        scripted = f"injected status {code} for GET {index}\n".encode()
                        return self._plain(record, code, retry, scripted)
                if self._get_count <= f.fail_first:
                    failed = f"injected failure {self._get_count}/{f.fail_first}\n".encode()
                    return self._plain(record, f.fail_status, retry, failed)
                if f.max_connections is not None and self._in_flight >= f.max_connections:
                    return self._plain(record, 503, retry, b"too many connections\n")
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
                admitted = True

        use_gzip = f.gzip_always or (
            f.gzip_if_asked and _gzip_acceptable(request.headers.get("Accept-Encoding"))
        )
        if use_gzip:
            with self._cond:
                if self._gzip_cache is None or self._gzip_cache[0] != version:
                    self._gzip_cache = (version, gzip.compress(data, mtime=0))
                rep = self._gzip_cache[1]
            etag = _gzip_etag(etag)
        else:
            rep = data
        size = len(rep)

        validators: list[tuple[str, str]] = []
        if etag is not None:
            validators.append(("ETag", etag))
        if last_modified is not None:
            validators.append(("Last-Modified", last_modified))
        if f.gzip_if_asked or f.gzip_always:
            validators.append(("Vary", "Accept-Encoding"))
        meta = [("Content-Type", f.content_type)] if f.content_type is not None else []
        meta += validators
        if use_gzip:
            meta.append(("Content-Encoding", "gzip"))
        if f.advertise_ranges:
            meta.append(("Accept-Ranges", "bytes"))
        if f.content_disposition is not None:
            meta.append(("Content-Disposition", f.content_disposition))

        # Preconditions, RFC 9110 section 13.2.2.
        h = request.headers
        lm_time = _parse_date(last_modified)
        if_match = h.get("If-Match")
        if if_match is not None:
            if not _etag_matches(if_match, etag, weak=False):
                return self._plain(record, 412, admitted=admitted)
        else:
            ius = _parse_date(h.get("If-Unmodified-Since"))
            if ius is not None and lm_time is not None and lm_time > ius:
                return self._plain(record, 412, admitted=admitted)
        if_none_match = h.get("If-None-Match")
        if if_none_match is not None:
            if _etag_matches(if_none_match, etag, weak=True):
                return self._plain(record, 304, validators, admitted=admitted, length=False)
        else:
            ims = _parse_date(h.get("If-Modified-Since"))
            if ims is not None and lm_time is not None and lm_time <= ims:
                return self._plain(record, 304, validators, admitted=admitted, length=False)

        if method == "HEAD":
            no_length = f.head_no_length or f.chunked
            head = meta if no_length else [*meta, ("Content-Length", str(size))]
            record.content_length = None if no_length else size
            return self._plain(record, 200, head, length=False)

        # Range, RFC 9110 section 14.
        specs = parse_range_header(record.range_header) if record.range_header else None
        if specs is not None:
            record.ranges = [_nominal_range(spec, size) for spec in specs]
        use_range = (
            specs is not None
            and not f.ignore_range
            and (record.if_range is None or _if_range_true(record.if_range, etag, last_modified))
        )
        status = 200
        headers = list(meta)
        body = rep
        start = end = 0
        if use_range:
            assert specs is not None
            satisfiable = [r for r in (resolve_range(s, size) for s in specs) if r is not None]
            if not satisfiable:
                unsat = [("Content-Range", f"bytes */{size}")]
                return self._plain(record, 416, unsat, admitted=admitted)
            if len(satisfiable) == 1:
                start, end = satisfiable[0]
                if f.wrong_range_start:
                    last = size - 1
                    start2 = min(max(start + f.wrong_range_start, 0), last)
                    end = min(max(end + f.wrong_range_start, start2), last)
                    start = start2
                status = 206
                body = rep[start : end + 1]
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            elif f.multipart:
                status = 206
                start, end = satisfiable[0][0], satisfiable[-1][1]
                headers = [
                    ("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}"),
                    *(h for h in headers if h[0] != "Content-Type"),
                ]
                part_type = (
                    f"Content-Type: {f.content_type}\r\n" if f.content_type is not None else ""
                )
                parts = []
                for a, b in satisfiable:
                    part_head = (
                        f"--{BOUNDARY}\r\n{part_type}Content-Range: bytes {a}-{b}/{size}\r\n\r\n"
                    )
                    parts.append(part_head.encode("ascii") + rep[a : b + 1])
                body = b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode("ascii")
        if status == 200:
            start, end = 0, size - 1

        if f.long_body > 0:
            following = rep[end + 1 : end + 1 + f.long_body]
            body += following + bytes(f.long_body - len(following))
        if not f.chunked:
            headers.append(("Content-Length", str(len(body))))
            record.content_length = len(body)

        with self._cond:
            index = self._body_responses
            self._body_responses += 1
        cut: int | None = None
        if f.short_body > 0:
            cut = max(0, len(body) - f.short_body)
        if f.drop_after is not None and (f.drop_first_k is None or index < f.drop_first_k):
            cut = f.drop_after if cut is None else min(cut, f.drop_after)
        stall = 0.0
        if f.stall_after_headers > 0 and (f.stall_first_k is None or index < f.stall_first_k):
            stall = f.stall_after_headers
        rates = [r for r in (f.rate, f.slow.get(start)) if r is not None and r > 0]

        record.status = status
        record.content_range = dict(headers).get("Content-Range")
        stream = _Body(
            self,
            record,
            body,
            admitted=admitted,
            cut=cut,
            stall=stall,
            rate=min(rates) if rates else None,
        )
        return _RawResponse(status, headers, stream)


def serve_file(
    server: RangeHTTPServer, path: str, data: bytes, faults: Faults | None = None
) -> ServedFile:
    """Serve ``data`` at ``path`` (GET and HEAD) with the given faults."""
    served = ServedFile(server, path, data, faults)
    server.expect_request(path).respond_with_handler(served.handle)
    server.files.append(served)
    return served


def serve_files(
    server: RangeHTTPServer, files: Mapping[str, bytes], faults: Faults | None = None
) -> dict[str, ServedFile]:
    """Serve every ``{path: data}`` of ``files``; each file gets its own copy of ``faults``."""
    return {
        path: serve_file(server, path, data, copy.deepcopy(faults) if faults is not None else None)
        for path, data in files.items()
    }
