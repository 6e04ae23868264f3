"""Connections through a proxy for the lean `http.client` layer: `ProxiedConnection` opens a
socket to the proxy (TLS to an `https://` proxy), then a CONNECT tunnel (HTTP proxies, for
https targets) or a SOCKS5 handshake (RFC 1928, with RFC 1929 username/password), and TLS to
the target on top for https. An http target through an HTTP proxy needs no tunnel: its
requests go in absolute form (`absolute_form`) with the `Proxy-Authorization` header.

Errors of the proxy itself (unreachable, credentials refused, a refused policy) are
`ProxyError`s naming the proxy without its password; a target the proxy could not reach is
the `ConnectError` a direct connection would give.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import struct
from typing import Any

from ...errors import ConnectError, ProxyError, RefusedError
from ..proxy import ProxyURL
from ..urls import Origin

# SOCKS5 reply codes (RFC 1928 section 6) that say the target, not the proxy, failed.
_SOCKS_TARGET_ERRORS = {
    1: "general SOCKS server failure",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
}
_SOCKS_ERRORS = {
    2: "connection not allowed by ruleset",
    7: "command not supported",
    8: "address type not supported",
}
_MAX_HEADER_LINES = 100


class ProxiedConnection(http.client.HTTPConnection):
    """An `http.client` connection to `key` (the target) through `proxy`."""

    def __init__(
        self,
        key: Origin,
        proxy: ProxyURL,
        *,
        timeout: float,
        target_tls: ssl.SSLContext | None,
        proxy_tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(key.host, key.port, timeout=timeout)
        self.default_port = 443 if key.scheme == "https" else 80  # the Host header's port
        self.proxy = proxy
        self.target_tls = target_tls
        self.proxy_tls = proxy_tls
        # An http target through an HTTP proxy: requests in absolute form, no tunnel.
        self.absolute_form = key.scheme == "http" and proxy.scheme in ("http", "https")

    def connect(self) -> None:
        sock: Any = open_proxy_socket(self.proxy, self.timeout, self.proxy_tls)
        try:
            if not self.absolute_form:
                if self.proxy.scheme in ("socks5", "socks5h"):
                    socks5_handshake(sock, self.proxy, self.host, self.port)
                else:
                    connect_tunnel(sock, self.proxy, self.host, self.port)
            if self.target_tls is not None:
                if isinstance(sock, ssl.SSLSocket):  # TLS inside the TLS of an https proxy
                    sock = _tls_in_tls(sock, self.target_tls, self.host)
                else:
                    sock = self.target_tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def open_proxy_socket(
    proxy: ProxyURL, timeout: float | None, tls: ssl.SSLContext | None
) -> socket.socket:
    """A connected socket to the proxy (TLS for an https proxy); ProxyError when it cannot be
    reached."""
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
    except TimeoutError as exc:
        raise ProxyError(f"proxy {proxy}: connect timeout") from exc
    except OSError as exc:
        raise ProxyError(f"proxy {proxy}: connection failed: {_reason(exc)}") from exc
    if proxy.scheme != "https":
        return sock
    assert tls is not None
    try:
        return tls.wrap_socket(sock, server_hostname=proxy.host)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        sock.close()
        raise ProxyError(f"proxy {proxy}: TLS error: {_reason(exc)}") from exc
    except OSError as exc:
        sock.close()
        raise ProxyError(f"proxy {proxy}: connection failed: {_reason(exc)}") from exc


def credentials_refused(proxy: ProxyURL) -> ProxyError:
    """The error for a 407 from `proxy`."""
    if proxy.username is None:
        return ProxyError(f"proxy {proxy}: requires credentials (407)")
    return ProxyError(f"proxy {proxy}: refused the credentials (407)")


def connect_tunnel(sock: Any, proxy: ProxyURL, host: str, port: int) -> None:
    """CONNECT `host`:`port` through an HTTP proxy on `sock`."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    auth = proxy.basic_auth()
    if auth is not None:
        lines.append(f"Proxy-Authorization: {auth}")
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        reader = sock.makefile("rb")
        try:
            status_line = reader.readline(65537)
            for _ in range(_MAX_HEADER_LINES):
                line = reader.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
        finally:
            reader.close()
    except TimeoutError as exc:
        raise ProxyError(f"proxy {proxy}: no answer to CONNECT {authority}") from exc
    except OSError as exc:
        raise ProxyError(f"proxy {proxy}: connection failed: {_reason(exc)}") from exc
    words = status_line.decode("latin-1").split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise ProxyError(f"proxy {proxy}: not an HTTP proxy (bad answer to CONNECT)")
    status = int(words[1])
    reason = words[2].strip() if len(words) > 2 else ""
    if 200 <= status < 300:
        return
    if status in (401, 407):  # no origin answers a CONNECT: tinyproxy says 401 for wrong ones
        raise credentials_refused(proxy)
    if status in (502, 503, 504):
        # The proxy is there; the target is not (what a direct connection would report).
        raise ConnectError(
            f"connection failed: {authority}: {status} {reason} from proxy {proxy}".rstrip()
        )
    raise ProxyError(f"proxy {proxy}: CONNECT {authority} refused: {status} {reason}".rstrip())


def socks5_handshake(sock: Any, proxy: ProxyURL, host: str, port: int) -> None:
    """Ask a SOCKS5 proxy on `sock` for a connection to `host`:`port`; socks5 resolves the
    name here, socks5h lets the proxy resolve it."""
    try:
        _socks5(sock, proxy, host, port)
    except TimeoutError as exc:
        raise ProxyError(f"proxy {proxy}: no answer to the SOCKS5 handshake") from exc
    except OSError as exc:
        raise ProxyError(f"proxy {proxy}: connection failed: {_reason(exc)}") from exc


def _socks5(sock: Any, proxy: ProxyURL, host: str, port: int) -> None:
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    sock.sendall(b"\x05" + bytes([len(methods)]) + methods)
    version, method = _recv_exact(sock, 2, proxy)
    if version != 5:
        raise ProxyError(f"proxy {proxy}: not a SOCKS5 proxy")
    if method == 0x02 and proxy.username is not None:
        user = proxy.username.encode()
        password = (proxy.password or "").encode()
        if len(user) > 255 or len(password) > 255:
            raise ProxyError(f"proxy {proxy}: user name or password longer than 255 bytes")
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        _, status = _recv_exact(sock, 2, proxy)
        if status != 0:
            raise ProxyError(f"proxy {proxy}: refused the credentials (SOCKS5)")
    elif method == 0xFF:
        if proxy.username is None:
            raise ProxyError(f"proxy {proxy}: requires credentials (SOCKS5)")
        raise ProxyError(f"proxy {proxy}: accepts none of our SOCKS5 authentication methods")
    elif method != 0x00:
        raise ProxyError(f"proxy {proxy}: chose an unknown SOCKS5 method {method}")
    sock.sendall(b"\x05\x01\x00" + _socks5_address(proxy, host) + struct.pack(">H", port))
    version, reply, _, kind = _recv_exact(sock, 4, proxy)
    if version != 5:
        raise ProxyError(f"proxy {proxy}: bad SOCKS5 reply")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if reply == 5:
        raise RefusedError(f"connection failed: {authority}: refused (through proxy {proxy})")
    if reply in _SOCKS_TARGET_ERRORS:
        why = _SOCKS_TARGET_ERRORS[reply]
        raise ConnectError(f"connection failed: {authority}: {why} (through proxy {proxy})")
    if reply != 0:
        why = _SOCKS_ERRORS.get(reply, f"error {reply}")
        raise ProxyError(f"proxy {proxy}: SOCKS5 CONNECT {authority} refused: {why}")
    # The address the proxy bound: read and dropped.
    if kind == 1:
        _recv_exact(sock, 4 + 2, proxy)
    elif kind == 4:
        _recv_exact(sock, 16 + 2, proxy)
    elif kind == 3:
        (length,) = _recv_exact(sock, 1, proxy)
        _recv_exact(sock, length + 2, proxy)
    else:
        raise ProxyError(f"proxy {proxy}: bad SOCKS5 reply")


def _socks5_address(proxy: ProxyURL, host: str) -> bytes:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if proxy.remote_dns:
            name = host.encode("idna")
            return b"\x03" + bytes([len(name)]) + name
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(f"connection failed: {host}: {_reason(exc)}") from exc
        address = ipaddress.ip_address(infos[0][4][0])
    if address.version == 4:
        return b"\x01" + address.packed
    return b"\x04" + address.packed


def _recv_exact(sock: Any, size: int, proxy: ProxyURL) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProxyError(f"proxy {proxy}: closed the connection during the SOCKS5 handshake")
        data += chunk
    return data


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _tls_in_tls(sock: ssl.SSLSocket, context: ssl.SSLContext, server_hostname: str) -> Any:
    """TLS to the target inside the TLS to an https proxy: urllib3 (a dependency of
    requests) has the memory-BIO transport that Python's ssl module lacks for it."""
    from urllib3.util.ssltransport import SSLTransport

    class TLSInTLS(SSLTransport):
        def shutdown(self, how: int) -> None:  # what `abort` calls on a connection's socket
            self.socket.shutdown(how)

    return TLSInTLS(sock, context, server_hostname=server_hostname)
