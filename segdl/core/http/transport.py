"""The requests transport (`RequestsTransport`, `RequestsBody`, `RequestsPool`): the only module
that imports requests. `segdl.core.http` names the interface it implements and makes it.

It owns one `requests.Session` per thread, redirects (followed by hand so that credentials never
cross origins), the ranged GET (checked by `semantics` before a byte of it is written), the
hot-path body reader, and the translation of requests/urllib3/socket errors into `segdl.errors`.
It knows nothing of files, segments or progress.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import importlib.util
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import requests
import urllib3

from ...errors import (
    ConnectError,
    InvalidURLError,
    NetworkError,
    ProtocolViolation,
    ProxyError,
    SegdlError,
    TimeoutError_,
    TLSError,
    TruncatedError,
)
from ..options import Options
from ..proxy import ProxyURL
from ..urls import origin
from . import base
from .lean import Connections, LeanResponse, connect_error
from .semantics import (
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
from .tunnel import credentials_refused

# An answer from requests, or from the lean `http.client` layer (the same attributes).
RawResponse: TypeAlias = requests.Response | LeanResponse


def silence_insecure_warnings() -> None:
    """For the CLI, which prints its own one-line warning for --insecure instead."""
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)


# A socket's receive buffer under a speed limit: measured with benchmarks/limit_rate.py, it
# keeps the rate the server sees over 10 s windows within a few percent of the limit.
_LIMITED_RECEIVE_BUFFER = 128 << 10


def warn_insecure(url: str) -> None:
    """The warning requests gives for each unverified request, given once by a transport
    that does not go through requests (the CLI silences both the same way)."""
    warnings.warn(
        f"Unverified HTTPS request is being made to {origin(url)[1]}: TLS verification is off",
        urllib3.exceptions.InsecureRequestWarning,
        stacklevel=3,
    )


def translate(exc: BaseException, url: str | None = None) -> SegdlError:
    """Map a requests/urllib3/socket/ssl exception onto the segdl tree (the one place that does).

    `url`, the URL being requested when known, names the host and port in the message.
    """
    if isinstance(exc, SegdlError):
        return exc
    address = None if url is None else "{}:{}".format(*origin(url)[1:])
    if isinstance(exc, requests.exceptions.SSLError | urllib3.exceptions.SSLError | ssl.SSLError):
        return TLSError(f"TLS error: {_reason(exc)}")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TimeoutError_(f"connect timeout: {address or _reason(exc)}")
    if isinstance(
        exc,
        requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError | socket.timeout,
    ):
        return TimeoutError_(f"read timeout: {address or 'the server'} went silent")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | http.client.IncompleteRead):
        return TruncatedError(f"connection broke off mid-body: {_reason(exc)}")
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return InvalidURLError(f"invalid URL: {_reason(exc)}")
    if isinstance(exc, urllib3.exceptions.ProtocolError | http.client.HTTPException):
        return TruncatedError(f"connection broke off: {_reason(exc)}")
    if isinstance(exc, requests.exceptions.ProxyError):
        return ProxyError(f"connection to the proxy failed: {_reason(exc)}")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        cause = _socket_error(exc)
        if url is not None and cause is not None:
            _, host, port = origin(url)
            return connect_error(cause, host, port)
        return ConnectError(f"connection failed: {_reason(exc)}")
    if isinstance(
        exc, requests.exceptions.RequestException | urllib3.exceptions.HTTPError | OSError
    ):
        return NetworkError(f"network error: {_reason(exc)}")
    raise TypeError(f"not a transport exception: {exc!r}") from exc


def _reason(exc: BaseException) -> str:
    # requests nests urllib3 errors several levels deep; the innermost message is the useful one.
    seen: set[int] = set()
    while exc.args and isinstance(exc.args[0], BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.args[0]
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    # An OSError's own words, without its errno ("Connection reset by peer").
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def _socket_error(exc: BaseException) -> OSError | None:
    """The socket's own error under requests' and urllib3's wrappers (refused, DNS, reset)."""
    found: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        reason = getattr(current, "reason", None)
        if current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        elif isinstance(reason, BaseException):
            current = reason
        else:
            current = current.__cause__ or current.__context__
    return found


@contextmanager
def translated(url: str | None = None) -> Iterator[None]:
    """Re-raise transport exceptions as segdl errors (`url`: the one being requested)."""
    try:
        yield
    except SegdlError:
        raise
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, url) from exc
    except http.client.HTTPException as exc:
        raise translate(exc, url) from exc


class RequestsBody:
    """A response body read straight into the caller's buffer.

    The fast path reads from the socket's buffered reader with `readinto1`, which returns as
    soon as some bytes arrived: large reads when the link is fast, prompt returns when it is
    slow (so a worker notices a moved boundary or a cancel), and no allocation per chunk.
    `close()` gives the connection back for reuse when the body was read to its exact end.
    """

    def __init__(self, response: RawResponse, length: int | None) -> None:
        self.response = response
        self.headers = response.headers
        self.status = response.status_code
        self.length = length  # exact number of body bytes expected, None when unknown
        self.protocol = "HTTP/1.1"  # requests and http.client speak nothing else
        self.in_memory = False  # read from the socket as it comes
        self.received = 0
        fp: Any = getattr(response.raw, "_fp", None)
        self._direct: Any = None
        self._http: Any = fp if isinstance(fp, http.client.HTTPResponse) else None
        if self._http is not None and not self._http.chunked and length is not None:
            self._direct = self._http.fp
        self._ended = False  # a body of unknown length reached its clean end
        # Called once when the body is closed: gives back the slot its request took.
        self.on_close: Callable[[], None] | None = None

    def readinto(self, view: memoryview) -> int:
        """Read up to len(view) body bytes; 0 only at the clean end of the body."""
        if self.length is not None:
            left = self.length - self.received
            if left <= 0:
                return 0
            if len(view) > left:
                view = view[:left]
        try:
            if self._direct is not None:
                n: int = self._direct.readinto1(view)
            else:
                data = self._read1(len(view))
                n = len(data)
                view[:n] = data
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            raise translate(exc) from exc
        if n == 0:
            if self.length is not None:
                raise TruncatedError(f"body ended after {self.received} of {self.length} bytes")
            self._ended = True
        self.received += n
        return n

    def _read1(self, size: int) -> bytes:
        if self._http is not None:
            data: bytes = self._http.read1(size)
            return data
        raw: Any = self.response.raw
        chunk: bytes = raw.read(size, decode_content=False)
        return chunk

    def check_no_more(self) -> None:
        """After the promised bytes, make sure an unannounced-length body really ended there."""
        if self._direct is not None:
            return  # the length came from Content-Length, which we checked, and we read no further
        try:
            extra = self._read1(1)
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError):
            return
        self._ended = not extra
        if extra:
            raise ProtocolViolation(
                f"server sent more than the {self.length} bytes it announced in Content-Range"
            )

    def close(self) -> None:
        """Release the connection for the next request if the body was read to its end, else
        close it (a body abandoned mid-way cannot be skipped cheaply)."""
        try:
            complete = self._ended or (self.length is not None and self.received == self.length)
            if complete and self._http is not None:
                try:
                    if self._direct is not None:
                        # We read past http.client's own accounting: settle it, so that it
                        # closes its file object (not the socket) as after any complete body.
                        self._http.length = 0
                        self._http.read()
                    if self._http.isclosed():
                        self.response.raw.release_conn()
                except (OSError, http.client.HTTPException):
                    pass  # then it is simply closed below
            self.response.close()
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()

    def abort(self) -> None:
        """From another thread: make a read blocked in this body return at once (the
        connection is shut down; the reader then closes the body as after any error)."""
        # The socket behind the body's own reader first: http.client lets go of the
        # connection's socket as soon as the headers say `Connection: close`.
        fp: Any = self._direct or (self._http.fp if self._http is not None else None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
        if sock is None:
            raw: Any = self.response.raw
            conn = getattr(raw, "_conn", None) or getattr(raw, "_connection", None)
            sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class RequestsPool:
    """One `requests.Session` per thread (sessions are not safe to share between threads),
    shared by every file a run fetches, so that a thread reuses its kept-alive connections
    from one file to the next."""

    def __init__(self, options: Options, *, hosts: int = 1) -> None:
        self.options = options
        self.hosts = hosts  # host pools each session keeps (a batch fetches from many hosts)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._lean: Connections | None = None
        self._closed = False
        self.answered = base.AnsweredHosts()
        self._limited = options.limit_rate is not None or options.limit_rate_per_host is not None

    @property
    def lean(self) -> Connections:
        """The lean `http.client` connections (made on first use)."""
        with self._lock:
            if self._lean is None:
                assert not self._closed, "lean connections asked for after close"
                self._lean = Connections(
                    verify=self.options.verify,
                    connect_timeout=self.options.connect_timeout,
                    read_timeout=self.options.timeout,
                    trust_env=self.options.trust_env,
                    proxies=self.options,
                    receive_buffer=_LIMITED_RECEIVE_BUFFER if self._limited else None,
                )
            return self._lean

    def get(self) -> requests.Session:
        """This thread's session."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = self.options.trust_env
            # No cookie engine: only the user's cookies are sent (by `headers_for`), as on the
            # lean path; what a server sets is never sent back.
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            session.verify = self.options.verify
            session.max_redirects = self.options.max_redirects
            adapter = requests.adapters.HTTPAdapter(pool_connections=self.hosts, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def transport(self, url: str) -> RequestsTransport:
        """A transport for `url` over these sessions (closing it leaves them open)."""
        return RequestsTransport(url, self.options, self)

    def abort(self) -> None:
        """Shut down the lean connections in use (see `Connections.abort`)."""
        with self._lock:
            lean = self._lean
        if lean is not None:
            lean.abort()

    def reconnect(self) -> None:
        """Drop this thread's idle connections: its next request opens a new one."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()  # a closed Session makes new pools on its next request
        with self._lock:
            lean = self._lean
        if lean is not None:
            lean.drop_last()

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
            lean, self._lean = self._lean, None
            self._closed = True
        for session in sessions:
            session.close()
        if lean is not None:
            lean.close()


@dataclass
class RequestsTransport:
    """Redirects and validated requests for one remote file, over a run's sessions."""

    url: str  # the URL the user gave: its origin decides where user headers may go
    options: Options = field(default_factory=Options)
    sessions: RequestsPool | None = None  # shared by a run; None: this transport's own

    def __post_init__(self) -> None:
        self._own_sessions = self.sessions is None
        if self.sessions is None:
            self.sessions = RequestsPool(self.options)

    # -- sessions -----------------------------------------------------------------------------
    def session(self) -> requests.Session:
        """This thread's session; requests sessions are not safe to share between threads."""
        assert self.sessions is not None
        return self.sessions.get()

    def reconnect(self) -> None:
        """Drop this thread's idle connections: its next request opens a new one."""
        assert self.sessions is not None
        self.sessions.reconnect()

    def abort(self) -> None:
        """From another thread: make every request of this transport's own lean connections
        return at once, answered or not (its owner is closing)."""
        if self._own_sessions and self.sessions is not None:
            self.sessions.abort()

    def close(self) -> None:
        """Close the sessions if they are this transport's own (a run closes shared ones)."""
        if self._own_sessions and self.sessions is not None:
            self.sessions.close()

    # -- requests -----------------------------------------------------------------------------
    def headers_for(self, url: str) -> dict[str, str]:
        """The headers of a request to `url` (see `semantics.user_headers`)."""
        return user_headers(self.options, self.url, url)

    def request(
        self,
        method: str,
        url: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        lean: bool = False,
    ) -> tuple[RawResponse, str]:
        """Send a request, following redirects by hand; returns the response and its URL.

        `lean` sends it through `http.client` directly where that behaves as requests would
        (see `connections`): the path of a batch's many small files. A request through a
        proxy goes there too (the lean layer speaks to every kind of proxy segdl takes).
        """
        assert self.sessions is not None
        session = self.session()
        seen = {url}
        current = url
        for _ in range(self.options.max_redirects + 1):
            headers = self.headers_for(current)
            if extra_headers:
                headers.update(extra_headers)
            response: RawResponse
            connections = self.sessions.lean
            proxy = connections.proxy(current)
            if connections.usable(current) and (lean or proxy is not None):
                with self.sessions.answered.requesting(current, translated):
                    response = self.sessions.lean.send(method, current, headers)
            else:
                with self.sessions.answered.requesting(current, translated):
                    response = session.request(
                        method,
                        current,
                        headers=headers,
                        stream=True,
                        allow_redirects=False,
                        timeout=(self.options.connect_timeout, self.options.timeout),
                        # Per request: a Session's own verify loses to REQUESTS_CA_BUNDLE and
                        # CURL_CA_BUNDLE from the environment (psf/requests#3829).
                        verify=self.options.verify,
                        proxies=_requests_proxies(proxy),
                    )
            if response.status_code == 407 and proxy is not None:
                response.close()
                raise credentials_refused(proxy)
            target = redirect_target(current, response, seen, self.options)
            if target is None:
                return response, current
            response.close()
            current = target
        raise too_many_redirects(url, self.options)

    def open_range(
        self,
        url: str,
        start: int,
        stop: int,
        *,
        total: int,
        validators: Validators,
    ) -> RequestsBody:
        """GET `[start, stop)` of a `total`-byte file and check the answer before any body is read.

        Raises RangeIgnoredError for a 200, RemoteChangedError when the file changed, and
        ProtocolViolation for any 206 that is not exactly the range asked for.
        """
        headers = range_request(start, stop, total, validators)
        # Lean: a run that stops cuts a range request still waiting for its answer.
        response, _ = self.request("GET", url, headers, lean=True)
        with closed_on_error(response):
            check_range_response(response, start, stop, total, validators)
        return RequestsBody(response, stop - start)

    def start_first(
        self, url: str, on_settled: Callable[[base.ResponseBody], None]
    ) -> base.ResponseBody | None:
        """Blocking sockets cannot send without waiting: always `open_first`."""
        return None

    def open_first(
        self,
        url: str,
        *,
        accept: tuple[str, ...] = (),
        started: base.ResponseBody | None = None,
    ) -> tuple[RequestsBody, str]:
        """The first request of a batch item: a GET of `bytes=0-` that sizes the file and
        carries its body. Returns the checked body and the URL redirects led to.

        A 206 must cover the whole file from byte 0 with its total; a 200 is the whole file
        from a server without ranges; a 416 `*/0` is an empty file (an empty body). With
        `accept`, the Content-Type must match one of its patterns before a byte is read.
        """
        response, final = self.request("GET", url, {"Range": "bytes=0-"}, lean=True)
        with closed_on_error(response):
            length = check_first_response(response, accept)
            if response.status_code == 416:
                response.content  # noqa: B018 - read the error body: the connection stays usable
        return RequestsBody(response, length), final

    def open_stream(self, url: str, offset: int, *, validators: Validators) -> RequestsBody:
        """GET the whole file, or from `offset` on (`bytes=offset-`) to continue a single stream.

        A resumed stream must come back as a 206 starting exactly at `offset`; anything else
        raises, and the caller starts again from zero.
        """
        # Lean: a batch that stops cuts a request still waiting for its answer.
        response, _ = self.request("GET", url, stream_request(offset, validators), lean=True)
        with closed_on_error(response):
            length = check_stream_response(response, offset, validators)
        return RequestsBody(response, length)


def _requests_proxies(proxy: ProxyURL | None) -> dict[str, str]:
    """requests' `proxies=` for the proxy `proxy_for` chose (None: none). `no_proxy: *` keeps
    requests from taking another from the environment: the choice is made once, by segdl."""
    if proxy is None:
        return {"no_proxy": "*"}
    if proxy.scheme.startswith("socks") and importlib.util.find_spec("socks") is None:
        raise ProxyError(
            f"proxy {proxy}: a SOCKS proxy with credentials from .netrc needs PySocks "
            "(pip install PySocks), or --no-proxy-env"
        )
    return {"http": proxy.url(), "https": proxy.url(), "no_proxy": "*"}


# mypy proves here that this module implements the interface the jobs are written against.
_TRANSPORT: type[base.Transport] = RequestsTransport
_BODY: type[base.ResponseBody] = RequestsBody
_POOL: type[base.ConnectionPool] = RequestsPool
