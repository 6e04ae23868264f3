"""Download options: one frozen, validated value with the defaults. Knows nothing of argv."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .._version import __version__
from ..errors import UsageError
from .cookies import NO_COOKIES, Cookies, load_cookie_file, parse_cookie_string
from .plan import MIN_SPLIT_DEFAULT
from .proxy import ProxyURL, check_environment, parse_noproxy, parse_proxy
from .verify import Checksum

MAX_CONNECTIONS = 64
IF_EXISTS = ("error", "skip", "overwrite", "rename")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])i?B?|B)?\s*$", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
USER_AGENT = f"segdl/{__version__}"  # identifiable, as image hosts ask of crawlers


def parse_size(text: str) -> int:
    """`1048576`, `512K`, `1M`, `1.5G` (binary multiples) -> bytes; raises UsageError."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"invalid size {text!r} (use a number with an optional K, M or G suffix)")
    number, unit = float(match[1]), (match[2] or "").upper()
    if not unit and not number.is_integer():
        raise UsageError(f"invalid size {text!r} (a number of bytes is a whole number)")
    return int(number * (1 << (10 * " KMGT".index(unit or " "))))


def parse_rate(text: str) -> int:
    """A speed limit: `parse_size`'s forms (`500K`, `20M`, `1.5G`), in bytes per second, at
    least 1; raises UsageError."""
    try:
        rate = parse_size(text)
    except UsageError:
        raise UsageError(
            f"invalid rate {text!r} (bytes per second, with an optional K, M or G suffix)"
        ) from None
    if rate < 1:
        raise UsageError(f"invalid rate {text!r} (must be at least 1 byte per second)")
    return rate


def parse_header(text: str) -> tuple[str, str]:
    """`'Name: value'` -> (name, value); raises UsageError."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0"):
        raise UsageError(f"invalid header {text!r} (expected 'Name: value')")
    return name, value


TRANSPORTS = ("auto", "curl", "python")
HTTP_VERSIONS = ("auto", "1.1", "2")
MAX_STREAMS = 1000


@dataclass(frozen=True)
class Options:
    """How one download runs. Every field is checked on creation. The transport reads its
    part (headers, timeouts, TLS, redirects, proxies) from here: there is no second copy."""

    connections: int = 8
    min_split: int = MIN_SPLIT_DEFAULT
    buffer_size: int = 1 << 20
    headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 15.0
    timeout: float = 30.0  # read timeout: the longest silence tolerated mid-body
    retries: int = 5  # consecutive failures without progress, per connection
    resume: bool = True
    if_exists: str = "error"
    checksum: Checksum | None = None
    save_interval: float = 0.25
    verify: bool | str = True
    max_redirects: int = 10
    location_trusted: bool = False
    allow_downgrade: bool = False
    trust_env: bool = True
    direct_io: bool = True  # whole blocks bypass the page cache on local file systems
    # Content-Type patterns (`image/*`) an answer must match before a byte is written; () any.
    accept: tuple[str, ...] = ()
    # fsync every file before its rename. Off in batches, whose journal (and the size check on
    # a re-run) is their crash safety: two syncs per small file would cost more than its fetch.
    # Files fetched in ranges are always synced, since a control file vouches for their bytes.
    sync_each_file: bool = True
    # The transport of per-request work: "auto" (libcurl where pycurl imports), "curl" or
    # "python" (requests and http.client); `SEGDL_TRANSPORT` in the environment decides "auto".
    transport: str = "auto"
    http_version: str = "auto"  # "1.1" or "2" force a version (curl's --http1.1 / --http2)
    streams: int = 32  # HTTP/2 requests at once on one connection (capped by the server)
    # Identity: the User-Agent of every request, and the user's cookies (see core.cookies:
    # `cookies.header(url, user_url)` picks those a request carries).
    user_agent: str = USER_AGENT
    cookies: Cookies = NO_COOKIES

    # Proxies: `proxy` for every URL whose host `noproxy` does not name (curl's --noproxy
    # rules); without it, the environment's when trust_env. Text is parsed on creation.
    proxy: ProxyURL | None = None
    noproxy: tuple[str, ...] = ()
    # Speed limits, bytes per second (None: none): every byte of the run, and each host's.
    limit_rate: int | None = None
    limit_rate_per_host: int | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise UsageError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.http_version not in HTTP_VERSIONS:
            raise UsageError(f"http_version must be one of {', '.join(HTTP_VERSIONS)}")
        if not 1 <= self.streams <= MAX_STREAMS:
            raise UsageError(f"streams must be between 1 and {MAX_STREAMS}")
        proxy: object = self.proxy
        if isinstance(proxy, str):
            object.__setattr__(self, "proxy", parse_proxy(proxy) if proxy.strip() else None)
        elif proxy is not None and not isinstance(proxy, ProxyURL):
            raise UsageError("proxy must be a URL such as http://host:3128")
        noproxy: object = self.noproxy
        if isinstance(noproxy, str) or noproxy is None:
            object.__setattr__(self, "noproxy", parse_noproxy(noproxy))
        elif noproxy:
            object.__setattr__(self, "noproxy", parse_noproxy(list(self.noproxy)))
        if self.trust_env and self.proxy is None:
            check_environment()
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise UsageError(f"connections must be between 1 and {MAX_CONNECTIONS}")
        if self.min_split < 1:
            raise UsageError("min split must be at least 1 byte")
        if self.buffer_size < 1024:
            raise UsageError("buffer size must be at least 1 KiB")
        if not (self.timeout > 0 and self.connect_timeout > 0):
            raise UsageError("timeouts must be positive")
        if self.retries < 0:
            raise UsageError("retries must be >= 0")
        if self.if_exists not in IF_EXISTS:
            raise UsageError(f"if_exists must be one of {', '.join(IF_EXISTS)}")
        if self.max_redirects < 0:
            raise UsageError("max redirects must be >= 0")
        if not self.save_interval > 0:  # also refuses NaN
            raise UsageError("save interval must be positive")
        if not self.user_agent.strip() or any(c in self.user_agent for c in "\r\n\0"):
            raise UsageError("the user agent must be a non-empty line")
        for name in ("limit_rate", "limit_rate_per_host"):
            rate = getattr(self, name)
            if rate is not None and (type(rate) is not int or rate < 1):
                raise UsageError(f"{name} must be a whole number of bytes per second, at least 1")


def parse_accept(text: str) -> tuple[str, ...]:
    """`image/*,application/pdf` -> ("image/*", "application/pdf"); raises UsageError."""
    patterns = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    for pattern in patterns:
        kind, slash, sub = pattern.partition("/")
        if not slash or not kind or not sub or (kind == "*" and sub != "*"):
            raise UsageError(f"invalid content type pattern {pattern!r} (e.g. image/*)")
    return patterns


def options_from(arguments: Mapping[str, Any], **overrides: Any) -> Options:
    """The validated `Options` from the arguments of a public function (`download`,
    `iter_download_many`, `open`, `extract`, the cluster's): the one place their keyword
    options are read. Every argument named like an `Options` field is taken, the others
    (a URL, a listener) are left alone; `overrides` win. `headers` may be a mapping or
    pairs, `checksum` an `ALGO=HEX` string, `accept` a comma-separated text or patterns,
    `verify` a CA file that must exist, `cookies` a `'name=value; ...'` string (for the
    origin of the URL given) and `load_cookies` a Netscape cookie file, added to them,
    `limit_rate` and `limit_rate_per_host` a number of bytes per second or a text such as
    `"20M"`."""
    given = {k: v for k, v in arguments.items() if k in _FIELDS} | overrides
    cookies = given.get("cookies")
    if isinstance(cookies, str):
        cookies = parse_cookie_string(cookies)
    cookie_file = overrides.get("load_cookies", arguments.get("load_cookies"))
    if cookie_file is not None:
        cookies = (cookies or NO_COOKIES) + load_cookie_file(cookie_file)
    given["cookies"] = cookies or NO_COOKIES
    if given.get("user_agent") is None:
        given.pop("user_agent", None)
    verify = given.get("verify", True)
    if isinstance(verify, str) and not os.path.isfile(verify):
        raise UsageError(f"CA certificate file not found: {verify}")
    checksum = given.get("checksum")
    if isinstance(checksum, str):
        given["checksum"] = Checksum.parse(checksum)
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = given.get("headers")
    given["headers"] = tuple(headers.items() if isinstance(headers, Mapping) else headers or ())
    accept: str | Iterable[str] | None = given.get("accept")
    given["accept"] = parse_accept(accept if isinstance(accept, str) else ",".join(accept or ()))
    for name in ("limit_rate", "limit_rate_per_host"):
        if isinstance(given.get(name), str):
            given[name] = parse_rate(given[name])
    return Options(**given)


_FIELDS = frozenset(f.name for f in fields(Options))
