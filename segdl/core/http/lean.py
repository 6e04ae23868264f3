"""The lean HTTP/1.1 layer under `transport`: kept-alive `http.client` connections per host.

requests costs about half a millisecond of CPU per request (preparing, merging environment
settings, hooks, adapters); for a batch of small files that is more than the transfer itself.
This layer sends the first GET of batch items straight through `http.client`: idle
connections are kept per origin, shared by the threads (one thread uses a connection at a
time), and reused from one file to the next, so a host never sees more connections than the
requests the scheduler lets run at once; TLS verified like
requests does (certifi's CA bundle, or the user's). A URL that goes through a proxy
(`segdl.core.proxy.proxy_for`) gets connections through it (`tunnel`: absolute-form requests
or a CONNECT tunnel through an HTTP proxy, a SOCKS5 handshake), so every request to it is
sent here. It is used only where it behaves as requests would: where no `.netrc` could add
credentials; elsewhere `transport` uses requests. Only `transport` imports this module.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConnectError, NameResolutionError, RefusedError, TimeoutError_, TLSError
from ..options import USER_AGENT
from ..proxy import ProxySettings, ProxyURL, proxy_for
from ..urls import Origin, origin
from .tunnel import ProxiedConnection


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    try:
        import certifi  # requests' own CA bundle: the same trust on both paths

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        return ssl.create_default_context()


def connect_error(exc: BaseException, host: str, port: int | None) -> ConnectError:
    """The error for a connection to `host`:`port` that could not be made, from the socket's
    own error: the one message both HTTP layers give (`connection failed: host:port: why`)."""
    address = host if port is None else f"{host}:{port}"
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    message = f"connection failed: {address}: {reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return NameResolutionError(message)
    if isinstance(exc, ConnectionRefusedError):
        return RefusedError(message)
    return ConnectError(message)


class LeanResponse:
    """An `http.client` answer shaped like the parts of `requests.Response` that transport
    uses: `status_code`, `reason`, `headers` (case-insensitive), `url`, `raw._fp`, `close()`."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        pool: Connections,
        key: Origin,
        conn: Any,
        url: str,
    ) -> None:
        self.raw = self
        self.url = url
        self._fp = response
        self.status_code = response.status
        self.reason = response.reason
        self.headers = response.headers
        self._pool, self._key, self._conn = pool, key, conn

    def release_conn(self) -> None:
        """The body was read to its end: the connection serves the thread's next request."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._fp.will_close:
                conn.close()
                self._pool.done(conn)
            else:
                self._pool.put(self._key, conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # a body abandoned mid-way cannot be skipped cheaply
            self._pool.done(conn)
        self._fp.close()

    @property
    def content(self) -> bytes:
        data = self._fp.read()
        self.release_conn()
        return data


class Connections:
    """Idle connections per origin, shared by threads; never used by two threads at once."""

    def __init__(
        self,
        *,
        verify: bool | str,
        connect_timeout: float,
        read_timeout: float,
        trust_env: bool,
        proxies: ProxySettings,
        receive_buffer: int | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        # Under a speed limit: a small socket receive buffer, so that what the server sends
        # follows what the limiter lets us read (the kernel would otherwise grow a slow
        # reader's buffer to megabytes and let the server send in bursts).
        self.receive_buffer = receive_buffer
        self.read_timeout = read_timeout
        self.trust_env = trust_env
        self._verify = verify
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[Any]] = {}
        self._busy: set[Any] = set()  # connections with a request on them now
        self._local = threading.local()  # the connection each thread last gave back
        self._closed = False
        self._netrc = trust_env and netrc_exists()
        self._settings = proxies
        self._proxy_of: dict[Origin, ProxyURL | None] = {}  # the decision, once per origin

    def usable(self, url: str) -> bool:
        """Whether this layer sends `url` as requests would: no `.netrc` could add credentials."""
        return not self._netrc

    def proxy(self, url: str) -> ProxyURL | None:
        """The proxy `url` goes through (`proxy_for`), None for a direct connection."""
        key = origin(url)
        try:
            return self._proxy_of[key]
        except KeyError:
            pass
        found = self._proxy_of[key] = proxy_for(url, self._settings)
        return found

    def put(self, key: Origin, conn: Any) -> None:
        """A connection whose answer was read to its end, for the next request to `key`."""
        with self._lock:
            self._busy.discard(conn)
            if not self._closed:
                self._idle.setdefault(key, []).append(conn)
                self._local.last = key, conn
                return
        conn.close()  # a thread that finished after the run closed its connections

    def drop_last(self) -> None:
        """Close the connection this thread last gave back, if still idle (a slow one)."""
        last = getattr(self._local, "last", None)
        if last is None:
            return
        self._local.last = None
        key, conn = last
        with self._lock:
            idle = self._idle.get(key, [])
            if conn not in idle:
                return  # reused or closed meanwhile
            idle.remove(conn)
        conn.close()

    def _take(self, key: Origin) -> Any:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def done(self, conn: Any) -> None:
        """`conn` was closed by its user."""
        with self._lock:
            self._busy.discard(conn)

    def abort(self) -> None:
        """From another thread: shut down every connection in use, so that a request waiting
        for its answer, or a body being read, returns at once with an error."""
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _connect(self, key: Origin, proxy: ProxyURL | None) -> Any:
        scheme, host, port = key
        conn: Any
        if (scheme == "https" or (proxy is not None and proxy.scheme == "https")) and (
            self._context is None
        ):
            self._context = _ssl_context(self._verify)
        if proxy is not None:
            conn = ProxiedConnection(
                key,
                proxy,
                timeout=self.connect_timeout,
                target_tls=self._context if scheme == "https" else None,
                proxy_tls=self._context,
            )
        elif scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise TLSError(f"TLS error: {exc}") from exc
        except TimeoutError as exc:
            conn.close()
            raise TimeoutError_(f"connect timeout: {host}:{port}") from exc
        except OSError as exc:
            conn.close()
            raise connect_error(exc, host, port) from exc
        conn.sock.settimeout(self.read_timeout)
        if self.receive_buffer is not None:
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        return conn

    def send(self, method: str, url: str, headers: Mapping[str, str]) -> LeanResponse:
        """Send one request (no redirects followed); errors are left for transport to map."""
        parts = urlsplit(url)
        key = origin(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"Accept": "*/*", **headers}
        if not any(name.lower() == "user-agent" for name in headers):
            all_headers["User-Agent"] = USER_AGENT
        proxy = self.proxy(url)
        if proxy is not None and key.scheme == "http" and proxy.scheme in ("http", "https"):
            # Through an HTTP proxy, without a tunnel: the request names the whole URL.
            host = f"[{key.host}]" if ":" in key.host else key.host
            target = f"http://{host}{'' if key.port == 80 else f':{key.port}'}{target}"
            auth = proxy.basic_auth()
            if auth is not None:
                all_headers["Proxy-Authorization"] = auth
        conn = self._take(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(key, proxy)
            with self._lock:
                self._busy.add(conn)
            try:
                conn.request(method, target, headers=all_headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.done(conn)
                if reused:
                    # A kept-alive connection the server closed meanwhile: once more on a new one
                    # (GET and HEAD are safe to repeat).
                    conn, reused = None, False
                    continue
                raise
            return LeanResponse(response, self, key, conn, url)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._idle = list(self._idle.values()), {}
        for idle in pools:
            for conn in idle:
                conn.close()


def netrc_exists() -> bool:
    """Whether requests could take credentials from a netrc file (it looks for these)."""
    if os.environ.get("NETRC"):
        return True
    home = os.path.expanduser("~")
    return any(os.path.exists(os.path.join(home, name)) for name in (".netrc", "_netrc"))
