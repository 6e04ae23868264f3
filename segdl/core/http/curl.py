"""The libcurl transport (`CurlPool`, `CurlTransport`, `CurlBody`): the only module that
imports pycurl. `segdl.core.http` chooses it where pycurl imports.

Per-request work goes through libcurl's multi interface: one `CurlLoop` thread drives one
multi handle for the whole run (epoll on libcurl's sockets, a wake-up socket for requests
from other threads), so the request, TLS, connection reuse, DNS cache and HTTP/2
multiplexing happen in C. One multi handle shares its connection, DNS and TLS session
caches between all its transfers by itself; no share handle is needed for a single loop.

Callers keep the blocking interface of `base`: a request waits for its answer's headers,
a body is read with `readinto`. The body arrives through libcurl's write callback into a
short queue of chunks; a full queue pauses the transfer (`CURL_WRITEFUNC_PAUSE`) until the
reader drains it, so memory stays bounded by transfers x `_WINDOW`.

segdl judges what libcurl moves: redirects are followed here (never by libcurl) through the
same policy as the other transport (`semantics.redirect_target`), user headers go only to
the user's origin, every answer passes the same checks, the stall timeout is kept by the
loop (libcurl's low-speed limit counts whole seconds), and libcurl's errors are translated
into `segdl.errors` in one place (`_translate`). Byte-heavy requests (ranges, streams) go
through the present transport (`transport`), whose hot loop reads into reused buffers.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from errno import ECONNREFUSED
from typing import Any

import pycurl

from ...errors import (
    ConnectError,
    NameResolutionError,
    NetworkError,
    ProtocolViolation,
    RefusedError,
    SegdlError,
    TimeoutError_,
    TLSError,
    TruncatedError,
)
from ..options import Options
from ..urls import Origin, origin
from . import base
from .lean import netrc_exists
from .semantics import (
    Response,
    Validators,
    check_first_response,
    check_range_response,
    check_stream_response,
    closed_on_error,
    range_request,
    redirect_target,
    stream_request,
    too_many_redirects,
    user_headers,
)
from .transport import RequestsPool, RequestsTransport, warn_insecure

_WINDOW = 1 << 20  # body bytes queued per transfer before libcurl is told to pause it
_BUFFER = 128 << 10  # libcurl's receive buffer: the size of the chunks handed to us
_TICK = 0.05  # how often the loop looks for stalled transfers
_SUPPRESS_CONNECT_HEADERS = 265  # CURLOPT_SUPPRESS_CONNECT_HEADERS (pycurl names no constant)
_E_PROXY = 97  # CURLE_PROXY: the proxy refused (handshake, credentials)
_E_HTTP2_STREAM = 92
_TLS_CODES = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91})


def available() -> str | None:
    """Why this transport cannot serve here, or None when it can (libcurl with HTTP/2)."""
    info = pycurl.version_info()
    if not info[4] & pycurl.VERSION_HTTP2:
        return f"libcurl {info[1]} was built without HTTP/2"
    return None


def version() -> str:
    """libcurl's version and the libraries that matter here (TLS, HTTP/2)."""
    return f"libcurl/{pycurl.version_info()[1]}"


class _Headers(Mapping[str, str]):
    """Response headers, looked up without regard to case (repeated fields joined by ", ")."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        old = self._fields.get(key)
        self._fields[key] = value if old is None else f"{old}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


class CurlBody:
    """One transfer: an answer (headers in, `Response`) and its body (`ResponseBody`).

    The loop thread fills it (`_header`, `_write`, `_finish`); the caller's thread waits on
    it and reads it. `close()` before the end cancels the transfer in the loop.
    """

    def __init__(self, loop: CurlLoop, url: str) -> None:
        self.url = url
        self.status_code = 0
        self.reason = ""
        self.headers = _Headers()
        self.protocol = "HTTP/1.1"
        self.length: int | None = None  # set by the transport once the answer is checked
        self.on_close: Callable[[], None] | None = None
        # Called once, from the loop thread, when the transfer ends or its body fills the
        # window (`CurlTransport.start_first`).
        self.on_settled: Callable[[base.ResponseBody], None] | None = None
        self.received = 0
        self._loop = loop
        self._cond = threading.Condition(threading.Lock())
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._headers_in = False
        self._done = False
        self._error: SegdlError | None = None
        self._paused = False  # by us, for a full queue
        self._closed = False
        self._easy: Any = None  # the loop's handle while the transfer runs
        self.last_activity = 0.0  # the loop's clock: the stall timeout counts from here

    @property
    def status(self) -> int:
        return self.status_code

    # -- the loop's side ---------------------------------------------------------------------
    def _header(self, line: bytes) -> None:
        self.last_activity = time.monotonic()
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            version, _, rest = text.partition(" ")
            code, _, reason = rest.partition(" ")
            self.status_code = int(code) if code.isdigit() else 0
            self.reason = reason.strip()
            self.protocol = "HTTP/2" if version == "HTTP/2" else "HTTP/1.1"
            self.headers = _Headers()  # a new answer: interim (1xx) headers are dropped
            return
        if text:
            name, sep, value = text.partition(":")
            if sep:
                self.headers.add(name.strip(), value.strip())
            return
        if self.status_code >= 200 or self.status_code == 0:
            with self._cond:
                self._headers_in = True
                self._cond.notify_all()

    def _write(self, data: bytes) -> int | None:
        self.last_activity = time.monotonic()
        with self._cond:
            if self._closed:
                return 0  # abandoned: libcurl stops the transfer (CURLE_WRITE_ERROR)
            if self._queued >= _WINDOW:
                self._paused = True
                pause = int(pycurl.WRITEFUNC_PAUSE)  # kept by libcurl, offered again on unpause
            else:
                pause = 0
                if not self._headers_in:
                    self._headers_in = True  # a body without a blank line first (HTTP/0.9)
                self._chunks.append(memoryview(data))
                self._queued += len(data)
                self._cond.notify_all()
        if pause:
            self._settle()  # a body larger than the window: its reader takes it from here
            return pause
        return None

    def _finish(self, error: SegdlError | None) -> None:
        with self._cond:
            self._done = True
            if self._error is None:
                self._error = error
            self._easy = None
            self._cond.notify_all()
        self._settle()

    def _settle(self) -> None:
        """(loop) The transfer ended, or its body fills the window: tell `on_settled`, once."""
        on_settled, self.on_settled = self.on_settled, None
        if on_settled is not None:
            on_settled(self)

    @property
    def in_memory(self) -> bool:
        """The whole answer is here: the transfer ended without an error."""
        return self._done and self._error is None and not self._closed

    def _resume(self) -> bool:
        """(loop) Whether a transfer paused for a full queue can take more now."""
        with self._cond:
            if self._paused and self._queued < _WINDOW // 2 and not self._closed:
                self._paused = False
                return True
            return False

    # -- the caller's side -------------------------------------------------------------------
    def wait_headers(self) -> None:
        """Block until the answer's headers are in; raises the transfer's error."""
        with self._cond:
            while not (self._headers_in or self._done):
                self._cond.wait()
            if not self._headers_in and self._error is not None:
                raise self._error
            if not self._headers_in:
                raise TruncatedError("connection closed before an answer")

    def readinto(self, view: memoryview) -> int:
        """Read up to len(view) body bytes; 0 only at the clean end of the body."""
        if self.length is not None:
            left = self.length - self.received
            if left <= 0:
                return 0
            if len(view) > left:
                view = view[:left]
        want = len(view)
        with self._cond:
            while not self._chunks and not self._done:
                self._cond.wait()
            filled = 0
            chunks = self._chunks
            while chunks and filled < want:
                head = chunks[0]
                n = min(len(head), want - filled)
                view[filled : filled + n] = head[:n]
                filled += n
                if n == len(head):
                    chunks.popleft()
                else:
                    chunks[0] = head[n:]
            self._queued -= filled
            resume = self._paused and self._queued < _WINDOW // 2
            error = self._error
        if resume:
            self._loop.call(self._loop.unpause, self)
        if filled == 0:
            if error is not None:
                raise error
            if self.length is not None:
                raise TruncatedError(f"body ended after {self.received} of {self.length} bytes")
        self.received += filled
        return filled

    def read_all(self) -> bytes:
        """The rest of the body (a short error page)."""
        out = bytearray()
        buffer = memoryview(bytearray(64 << 10))
        while n := self.readinto(buffer):
            out += buffer[:n]
        return bytes(out)

    def check_no_more(self) -> None:
        """After the promised bytes, raise ProtocolViolation if the body goes on."""
        with self._cond:
            while not self._chunks and not self._done:
                self._cond.wait()
            if self._chunks:
                raise ProtocolViolation(
                    f"server sent more than the {self.length} bytes it announced"
                )

    def close(self) -> None:
        """Cancel the transfer if it still runs; gives `on_close` its one call."""
        try:
            with self._cond:
                running = not self._done and not self._closed
                self._closed = True
                self._chunks.clear()
                self._queued = 0
            if running:
                self._loop.call(self._loop.cancel, self)
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()

    def abort(self) -> None:
        """From another thread: a read or a wait blocked on this transfer returns at once."""
        with self._cond:
            if self._error is None:
                self._error = TruncatedError("connection broke off: the transfer was cut")
            self._done = True
            self._cond.notify_all()
        self._loop.call(self._loop.cancel, self)


class CurlLoop:
    """One thread and one libcurl multi handle: every transfer of a run (see the module
    docstring). Only the loop thread touches libcurl handles; other threads hand it work
    through `call`."""

    def __init__(self, options: Options, *, per_host: int, streams: int) -> None:
        self.options = options
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, per_host)
        self._multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, streams)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: collections.deque[Callable[[], None]] = collections.deque()
        self._woken = False
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._running: set[CurlBody] = set()
        self._free: list[Any] = []  # easy handles kept for reuse
        self._closing = False
        self._next_check = 0.0
        self._ca = _ca_file(options.verify)
        self._netrc = options.trust_env and netrc_exists()  # read once for the run
        self._thread = threading.Thread(target=self._run, name="segdl-curl", daemon=True)
        self._thread.start()

    # -- from any thread ---------------------------------------------------------------------
    def call(self, work: Callable[..., None], *args: Any) -> None:
        """Run `work(*args)` in the loop thread, soon."""
        self._inbox.append(lambda: work(*args))
        with self._lock:
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def submit(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        http_version: str,
        on_settled: Callable[[base.ResponseBody], None] | None = None,
    ) -> CurlBody:
        """Start a request; the returned body's `wait_headers()` waits for the answer."""
        body = CurlBody(self, url)
        body.on_settled = on_settled
        self.call(self._start, body, method, url, dict(headers), http_version)
        return body

    def abort(self) -> None:
        """Cut every transfer (the run is stopping)."""
        self.call(self._abort_all)

    def close(self) -> None:
        self._closing = True
        self.call(self._abort_all)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the loop thread ---------------------------------------------------------------------
    def _start(
        self, body: CurlBody, method: str, url: str, headers: dict[str, str], version: str
    ) -> None:
        if body._closed or body._done:
            return
        easy = self._free.pop() if self._free else pycurl.Curl()
        try:
            self._configure(easy, body, method, url, headers, version)
        except pycurl.error as exc:
            self._free.append(easy)
            body._finish(_translate(exc.args[0], str(exc.args[1]), url, 0, connected=False))
            return
        body._easy = easy
        easy.body = body
        body.last_activity = time.monotonic() + self.options.connect_timeout
        self._running.add(body)
        self._multi.add_handle(easy)

    def _configure(
        self,
        easy: Any,
        body: CurlBody,
        method: str,
        url: str,
        headers: dict[str, str],
        version: str,
    ) -> None:
        options = self.options
        easy.reset()
        easy.setopt(pycurl.URL, url)
        easy.setopt(pycurl.NOSIGNAL, 1)
        easy.setopt(pycurl.FOLLOWLOCATION, 0)
        easy.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        easy.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(options.connect_timeout * 1000)))
        easy.setopt(pycurl.BUFFERSIZE, _BUFFER)
        easy.setopt(pycurl.HEADERFUNCTION, body._header)
        easy.setopt(pycurl.WRITEFUNCTION, body._write)
        easy.setopt(_SUPPRESS_CONNECT_HEADERS, 1)  # a proxy's CONNECT answer is not ours
        easy.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        if method == "HEAD":
            easy.setopt(pycurl.NOBODY, 1)
        elif method != "GET":
            easy.setopt(pycurl.CUSTOMREQUEST, method)
        if version == "1.1":
            easy.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        else:
            wanted = (
                pycurl.CURL_HTTP_VERSION_2_0 if version == "2" else pycurl.CURL_HTTP_VERSION_2TLS
            )
            easy.setopt(pycurl.HTTP_VERSION, wanted)
            if url[:6].lower() == "https:":
                # Wait for a connection being made to the host (its TLS handshake says
                # whether it multiplexes) rather than open one more. Not on plain http:
                # there libcurl would wait for a whole HTTP/1.1 answer to learn the same.
                easy.setopt(pycurl.PIPEWAIT, 1)
        if options.verify is False:
            easy.setopt(pycurl.SSL_VERIFYPEER, 0)
            easy.setopt(pycurl.SSL_VERIFYHOST, 0)
        elif self._ca is not None:
            easy.setopt(pycurl.CAINFO, self._ca)
        # Never a proxy of libcurl's own choosing (it reads the environment by itself): a
        # request that goes through a proxy goes through the socket transport (`_ViaProxy`).
        easy.setopt(pycurl.PROXY, "")
        if self._netrc:
            easy.setopt(pycurl.NETRC, pycurl.NETRC_OPTIONAL)

    def unpause(self, body: CurlBody) -> None:
        easy = body._easy
        if easy is not None and body._resume():
            body.last_activity = time.monotonic()
            # The reader may have closed it meanwhile: our write callback refuses the data.
            with contextlib.suppress(pycurl.error):
                easy.pause(pycurl.PAUSE_CONT)

    def cancel(self, body: CurlBody, error: SegdlError | None = None) -> None:
        """End `body`'s transfer where it is, with `error` (by default: it was cut)."""
        easy = body._easy
        if easy is None:
            return
        self._running.discard(body)
        self._multi.remove_handle(easy)
        self._release(easy)
        body._finish(error or TruncatedError("connection broke off: the transfer was cut"))

    def _abort_all(self) -> None:
        for body in list(self._running):
            self.cancel(body)

    def _release(self, easy: Any) -> None:
        easy.body = None
        if len(self._free) < 256:
            self._free.append(easy)
        else:
            easy.close()

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        selector = self._selector
        if what == pycurl.POLL_REMOVE:
            with contextlib.suppress(KeyError, ValueError, OSError):
                selector.unregister(fd)
            return
        events = 0
        if what & pycurl.POLL_IN:
            events |= selectors.EVENT_READ
        if what & pycurl.POLL_OUT:
            events |= selectors.EVENT_WRITE
        try:
            selector.modify(fd, events)
        except KeyError:
            selector.register(fd, events)

    def _on_timer(self, ms: int) -> None:
        self._deadline = None if ms < 0 else time.monotonic() + ms / 1000

    def _run(self) -> None:
        multi, selector, wake = self._multi, self._selector, self._wake_r
        try:
            while True:
                now = time.monotonic()
                timeout = _TICK
                if self._deadline is not None:
                    timeout = min(timeout, max(0.0, self._deadline - now))
                for key, mask in selector.select(timeout):
                    if key.fileobj is wake:
                        continue
                    action = 0
                    if mask & selectors.EVENT_READ:
                        action |= pycurl.CSELECT_IN
                    if mask & selectors.EVENT_WRITE:
                        action |= pycurl.CSELECT_OUT
                    multi.socket_action(key.fd, action)
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    self._deadline = None
                    multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
                self._run_inbox()
                self._reap()
                now = time.monotonic()
                if now >= self._next_check:
                    self._next_check = now + _TICK
                    self._stalls(now)
                if self._closing and not self._running and not self._inbox:
                    return
        finally:
            self._shutdown()

    def _run_inbox(self) -> None:
        with self._lock:
            self._woken = False
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        inbox = self._inbox
        while inbox:
            inbox.popleft()()

    def _reap(self) -> None:
        multi = self._multi
        while True:
            queued, ok, failed = multi.info_read()
            for easy in ok:
                self._done(easy, None)
            for easy, code, message in failed:
                self._done(easy, (code, message))
            if not queued:
                return

    def _done(self, easy: Any, failure: tuple[int, str] | None) -> None:
        body: CurlBody | None = easy.body
        errno = easy.getinfo(pycurl.OS_ERRNO) if failure is not None else 0
        self._multi.remove_handle(easy)
        self._release(easy)
        if body is None:
            return
        self._running.discard(body)
        error = None
        if failure is not None:
            code, message = failure
            error = _translate(code, message, body.url, errno, connected=body.status_code != 0)
        body._finish(error)

    def _stalls(self, now: float) -> None:
        limit = self.options.timeout
        for body in list(self._running):
            if body._paused:
                continue  # waiting for its reader, not for the server
            if now - body.last_activity > limit:
                address = "{}:{}".format(*origin(body.url)[1:])
                self.cancel(body, TimeoutError_(f"read timeout: {address} went silent"))

    def _shutdown(self) -> None:
        for body in list(self._running):
            body._finish(TruncatedError("connection broke off: the run stopped"))
        self._running.clear()
        for easy in self._free:
            easy.close()
        self._free.clear()
        self._multi.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _translate(code: int, message: str, url: str, errno: int, *, connected: bool) -> SegdlError:
    """libcurl's error `code` (with the socket's `errno`) onto the segdl tree (the one place
    that does), worded as the other transport words it."""
    address = "{}:{}".format(*origin(url)[1:])
    reason = message.strip() or f"libcurl error {code}"
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return NameResolutionError(f"connection failed: {address}: Name or service not known")
    if code == pycurl.E_COULDNT_CONNECT:
        why = os.strerror(errno) if errno else reason
        if errno == ECONNREFUSED:
            return RefusedError(f"connection failed: {address}: {why}")
        return ConnectError(f"connection failed: {address}: {why}")
    if code in (pycurl.E_COULDNT_RESOLVE_PROXY, _E_PROXY):
        return ConnectError(f"connection to the proxy failed: {reason}")
    if code in _TLS_CODES:
        return TLSError(f"TLS error: {reason}")
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if not connected:
            return TimeoutError_(f"connect timeout: {address}")
        return TimeoutError_(f"read timeout: {address} went silent")
    if code in (
        pycurl.E_PARTIAL_FILE,
        pycurl.E_RECV_ERROR,
        pycurl.E_GOT_NOTHING,
        pycurl.E_SEND_ERROR,
        pycurl.E_HTTP2,
        _E_HTTP2_STREAM,
        pycurl.E_WRITE_ERROR,
    ):
        return TruncatedError(f"connection broke off: {reason}")
    return NetworkError(f"network error: {reason}")


def _ca_file(verify: bool | str) -> str | None:
    """The CA bundle: the user's, else requests' own (certifi): the same trust on both paths."""
    if isinstance(verify, str):
        return verify
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None


class CurlPool:
    """A run's connections: one `CurlLoop` for per-request work, and the present transport's
    pool (`RequestsPool`) for byte-heavy ranges and streams."""

    def __init__(self, options: Options, *, hosts: int = 1, per_host: int = 0) -> None:
        self.options = options
        self.answered = base.AnsweredHosts()
        self.bytes_pool = RequestsPool(options, hosts=hosts)
        self.bytes_pool.answered = self.answered
        self._per_host = per_host
        self.multiplexed: set[Origin] = set()  # origins that spoke HTTP/2 in this run
        self._loop: CurlLoop | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def loop(self) -> CurlLoop:
        with self._lock:
            if self._loop is None:
                assert not self._closed, "curl loop asked for after close"
                self._loop = CurlLoop(
                    self.options, per_host=self._per_host, streams=self.options.streams
                )
            return self._loop

    def transport(self, url: str) -> CurlTransport:
        return CurlTransport(url, self.options, self)

    def abort(self) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None:
            loop.abort()
        self.bytes_pool.abort()

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            self._closed = True
        if loop is not None:
            loop.close()
        self.bytes_pool.close()


class _ViaProxy(Exception):
    """A request (or a redirect of it) goes through a proxy: the socket transport sends it,
    whose proxy support (HTTP, CONNECT, SOCKS5) is the one segdl has."""


@contextmanager
def _untranslated(url: str) -> Iterator[None]:
    yield  # libcurl's errors are translated where transfers end (`_translate`)


class CurlTransport:
    """Redirects and validated requests for one remote file: its requests through libcurl,
    its ranges and streams through the present transport."""

    def __init__(self, url: str, options: Options, pool: CurlPool | None = None) -> None:
        self.url = url
        self.options = options
        self._own = pool is None
        self.pool = pool if pool is not None else CurlPool(options)
        self._bytes = RequestsTransport(url, options, self.pool.bytes_pool)

    def _proxied(self, url: str) -> bool:
        return self.pool.bytes_pool.lean.proxy(url) is not None

    def request(
        self, method: str, url: str, extra_headers: Mapping[str, str] | None = None
    ) -> tuple[Response, str]:
        """Send a request, following redirects; the answer (body unread) and its URL."""
        try:
            return self._request(method, url, extra_headers)
        except _ViaProxy:
            return self._bytes.request(method, url, extra_headers, lean=True)

    def start_first(
        self, url: str, on_settled: Callable[[base.ResponseBody], None]
    ) -> CurlBody | None:
        """Send a batch item's first GET (`bytes=0-`) without waiting for it: `on_settled`
        is called from the loop thread once it ended or its body fills the window;
        `open_first(url, started=body)` then checks it (and follows its redirects). None
        when the request must go the blocking way (through a proxy)."""
        if self._proxied(url):
            return None
        headers = user_headers(self.options, self.url, url)
        headers["Range"] = "bytes=0-"
        return self.pool.loop.submit(
            "GET", url, headers, http_version=self.options.http_version, on_settled=on_settled
        )

    def _request(
        self,
        method: str,
        url: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        started: CurlBody | None = None,
    ) -> tuple[CurlBody, str]:
        seen = {url}
        current = url
        loop = self.pool.loop
        for _ in range(self.options.max_redirects + 1):
            body, started = started, None  # the first hop may be sent by `start_first`
            if body is None:
                if self._proxied(current):
                    raise _ViaProxy
                headers = user_headers(self.options, self.url, current)
                if extra_headers:
                    headers.update(extra_headers)
                if self.options.verify is False and origin(current)[0] == "https":
                    warn_insecure(current)
                body = loop.submit(method, current, headers, http_version=self.options.http_version)
            with self.pool.answered.requesting(current, _untranslated):
                try:
                    body.wait_headers()
                except BaseException:
                    body.close()
                    raise
            if body.protocol == "HTTP/2":
                self.pool.multiplexed.add(origin(current))
            target = redirect_target(current, body, seen, self.options)
            if target is None:
                return body, current
            body.close()
            current = target
        raise too_many_redirects(url, self.options)

    def open_first(
        self,
        url: str,
        *,
        accept: tuple[str, ...] = (),
        started: base.ResponseBody | None = None,
    ) -> tuple[base.ResponseBody, str]:
        """A batch item's GET of `bytes=0-` (see `RequestsTransport.open_first`); `started`:
        the body `start_first` sent, checked here instead of a new request."""
        assert started is None or isinstance(started, CurlBody)
        try:
            body, final = self._request("GET", url, {"Range": "bytes=0-"}, started=started)
        except _ViaProxy:
            return self._bytes.open_first(url, accept=accept)
        with closed_on_error(body):
            length = check_first_response(body, accept)
            if body.status_code == 416:
                body.read_all()
        body.length = length
        return body, final

    def _multiplexed(self, url: str) -> bool:
        """Whether `url`'s host spoke HTTP/2 here: its ranges then share the connections
        libcurl multiplexes (a range of a connection of its own would be one connection more
        than the host's cap)."""
        return origin(url) in self.pool.multiplexed

    def open_range(
        self, url: str, start: int, stop: int, *, total: int, validators: Validators
    ) -> base.ResponseBody:
        """GET `[start, stop)` (see `RequestsTransport.open_range`)."""
        if not self._multiplexed(url):
            return self._bytes.open_range(url, start, stop, total=total, validators=validators)
        headers = range_request(start, stop, total, validators)
        try:
            body, _ = self._request("GET", url, headers)
        except _ViaProxy:
            return self._bytes.open_range(url, start, stop, total=total, validators=validators)
        with closed_on_error(body):
            check_range_response(body, start, stop, total, validators)
        body.length = stop - start
        return body

    def open_stream(self, url: str, offset: int, *, validators: Validators) -> base.ResponseBody:
        """GET the whole file or the rest from `offset` (see `RequestsTransport.open_stream`)."""
        if not self._multiplexed(url):
            return self._bytes.open_stream(url, offset, validators=validators)
        try:
            body, _ = self._request("GET", url, stream_request(offset, validators))
        except _ViaProxy:
            return self._bytes.open_stream(url, offset, validators=validators)
        with closed_on_error(body):
            length = check_stream_response(body, offset, validators)
        body.length = length
        return body

    def reconnect(self) -> None:
        self._bytes.reconnect()

    def abort(self) -> None:
        if self._own:
            self.pool.abort()

    def close(self) -> None:
        if self._own:
            self.pool.close()


# mypy proves here that this module implements the interface the jobs are written against.
_TRANSPORT: type[base.Transport] = CurlTransport
_BODY: type[base.ResponseBody] = CurlBody
_POOL: type[base.ConnectionPool] = CurlPool
