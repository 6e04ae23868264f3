"""Which proxy a URL goes through, whatever the transport: `proxy_for` is the one decision
(the `--proxy` given, unless `--noproxy` names the host; else the environment's
`HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` unless `NO_PROXY` names it, when the environment is
trusted). `ProxyURL` is a parsed proxy (`http`, `https`, `socks5`, `socks5h`); its `str()` and
`without_password` render a proxy for messages without its password. Host lists follow curl's
`--noproxy`/`NO_PROXY`: comma-separated names, `*` for every host, a name matches its
subdomains (a leading dot is the same), IP addresses and CIDR blocks match numerically, and
an optional `:port` limits an entry to that port.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from ..errors import UsageError

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
# curl's defaults: 1080 for an HTTP or SOCKS proxy without a port, 443 for an HTTPS proxy.
_DEFAULT_PORTS = {"http": 1080, "https": 443, "socks5": 1080, "socks5h": 1080}


@dataclass(frozen=True)
class ProxyURL:
    """A proxy: scheme, host, port and optional credentials (the password never in repr)."""

    scheme: str  # one of PROXY_SCHEMES
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """The proxy for messages: `scheme://user@host:port`, never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{_bracket(self.host)}:{self.port}"

    def __repr__(self) -> str:
        return f"ProxyURL({str(self)!r})"

    @property
    def remote_dns(self) -> bool:
        """Whether the proxy resolves the target's name (socks5h; HTTP proxies always do)."""
        return self.scheme != "socks5"

    def basic_auth(self) -> str | None:
        """The `Proxy-Authorization` value for an HTTP proxy with credentials, else None."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def url(self) -> str:
        """The full URL, credentials included (for a library that takes the proxy as a URL;
        never for a message)."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="")
            if self.password is not None:
                user += ":" + quote(self.password, safe="")
            user += "@"
        return f"{self.scheme}://{user}{_bracket(self.host)}:{self.port}"


class ProxySettings(Protocol):
    """The part of `Options` that `proxy_for` reads."""

    @property
    def proxy(self) -> ProxyURL | None: ...
    @property
    def noproxy(self) -> tuple[str, ...]: ...
    @property
    def trust_env(self) -> bool: ...


def without_password(text: str) -> str:
    """`text` (a proxy URL, maybe malformed) with the password of its userinfo left out."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    authority_end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        authority = userinfo.partition(":")[0] + "@" + hostport
    return f"{scheme}{sep}{authority}{tail}"


def parse_proxy(text: str) -> ProxyURL:
    """`[scheme://][user[:password]@]host[:port][/]` -> ProxyURL (no scheme: http, as curl
    does); raises UsageError for an unknown scheme or a malformed URL."""
    shown = without_password(text.strip())
    given = text.strip()
    if "://" not in given:
        given = "http://" + given
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid proxy URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise UsageError(
            f"unsupported proxy scheme {parts.scheme!r} in {shown!r} "
            f"(use {', '.join(PROXY_SCHEMES)})"
        )
    host = parts.hostname
    if not host or any(c in host for c in " \t\r\n"):
        raise UsageError(f"invalid proxy URL {shown!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"invalid proxy URL {shown!r}: a proxy URL has no path or query")
    if port == 0:
        raise UsageError(f"invalid proxy URL {shown!r}: port 0")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(
        scheme, host.lower(), port or _DEFAULT_PORTS[scheme], username or None, password
    )


def parse_noproxy(text: str | Iterable[str] | None, *, strict: bool = True) -> tuple[str, ...]:
    """`"example.com, .local, 10.0.0.0/8, host:8080, *"` -> its entries, normalised (lower
    case, no leading dot); raises UsageError for an entry that is not a host, or leaves it
    out when not `strict` (NO_PROXY: curl ignores what it cannot use there)."""
    if text is None:
        return ()
    items = text.replace(" ", ",").split(",") if isinstance(text, str) else list(text)
    entries: list[str] = []
    for item in items:
        entry = item.strip().lower()
        if not entry:
            continue
        if entry != "*":
            host, port = _split_port(entry)
            host = host.lstrip(".")
            why = None
            if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
                why = ": bad port"
            elif not host or (any(c in host for c in "/@?#") and not _is_network(host)):
                why = ""
            if why is not None:
                if not strict:
                    continue
                raise UsageError(f"invalid --noproxy entry {item.strip()!r}{why}")
            entry = host if port is None else f"{host}:{port}"
        entries.append(entry)
    return tuple(entries)


def bypasses(entries: Iterable[str], host: str, port: int) -> bool:
    """Whether `host`:`port` is named by a --noproxy/NO_PROXY list (curl's rules)."""
    host = host.lower().rstrip(".").strip("[]")
    address = _address(host)
    for entry in entries:
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and int(entry_port) != port:
            continue
        name = name.strip("[]")
        if address is not None:
            network = _network(name)
            if network is not None and address in network:
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def environment_proxies() -> dict[str, str]:
    """The proxies of the environment by scheme (`http`, `https`, `all`, `no`), as urllib
    reads them (lower or upper case names; `HTTP_PROXY` ignored in a CGI script)."""
    return urllib.request.getproxies_environment()


def check_environment() -> None:
    """Raise UsageError, naming the variable, for a proxy in the environment that would be
    refused on first use (so that it is refused before anything is fetched)."""
    for scheme, value in environment_proxies().items():
        if scheme in ("http", "https", "all") and value:
            try:
                parse_proxy(value)
            except UsageError as exc:
                raise UsageError(f"{scheme.upper()}_PROXY: {exc}") from None


def proxy_for(url: str, options: ProxySettings) -> ProxyURL | None:
    """The proxy that `url` goes through, or None for a direct connection: the explicit
    proxy unless the explicit no-proxy list names the host; else, when the environment is
    trusted, its proxy for the URL's scheme (or `ALL_PROXY`) unless `NO_PROXY` names the
    host. A malformed proxy in the environment is a UsageError naming the variable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    if options.noproxy and bypasses(options.noproxy, host, port):
        return None
    if options.proxy is not None:
        return options.proxy
    if not options.trust_env:
        return None
    found = environment_proxies()
    value = found.get(scheme) or found.get("all")
    if not value:
        return None
    if bypasses(parse_noproxy(found.get("no", ""), strict=False), host, port):
        return None
    variable = f"{scheme.upper()}_PROXY" if found.get(scheme) else "ALL_PROXY"
    try:
        return parse_proxy(value)
    except UsageError as exc:
        raise UsageError(f"{variable}: {exc}") from None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_port(entry: str) -> tuple[str, str | None]:
    """`host:port`, `[v6]:port`, `v6`, `host` -> (host, port or None)."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return host + "]", port
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _is_network(text: str) -> bool:
    return _network(text.strip("[]")) is not None
