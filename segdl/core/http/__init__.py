"""HTTP transports behind one interface (`base`): the jobs name the protocols and call the two
factories below, which choose the implementation:

- `curl` (libcurl's multi interface through pycurl) for per-request work: first GETs,
  probes, HTTP/2; its ranges and streams go through the present transport;
- `transport` (requests, with lean kept-alive http.client connections) for everything where
  pycurl cannot be imported, or where `Options.transport` (or `SEGDL_TRANSPORT`) says
  "python".
"""

from __future__ import annotations

import os

from ...errors import UsageError
from ..options import Options
from .base import ConnectionPool, ResponseBody, Transport
from .semantics import Response, Validators
from .transport import RequestsPool, RequestsTransport, silence_insecure_warnings

_CURL_MISSING: str | None
try:
    from . import curl
except ImportError as exc:  # no wheel for this platform: the present transport serves alone
    _CURL_MISSING = f"pycurl cannot be imported ({exc})"
else:
    _CURL_MISSING = curl.available()

__all__ = [
    "ConnectionPool",
    "Response",
    "ResponseBody",
    "Transport",
    "Validators",
    "curl_missing",
    "describe",
    "open_pool",
    "open_transport",
    "silence_insecure_warnings",
    "uses_curl",
]


def _choice(options: Options) -> str:
    """ "auto", "curl" or "python": the options' choice, else the environment's."""
    choice = options.transport
    if choice == "auto":
        choice = os.environ.get("SEGDL_TRANSPORT", "auto").strip().lower() or "auto"
    if choice == "curl" and _CURL_MISSING is not None:
        raise UsageError(f"the libcurl transport is not available: {_CURL_MISSING}")
    return choice


def uses_curl(options: Options) -> bool:
    """Whether a run's requests go through libcurl under `options`. Forcing "curl" where
    it cannot serve is a UsageError; "auto" falls back quietly (see `describe`)."""
    choice = _choice(options)
    return choice == "curl" or (choice == "auto" and _CURL_MISSING is None)


def curl_missing() -> str | None:
    """Why the libcurl transport cannot serve here, or None when it can."""
    return _CURL_MISSING


def describe() -> str:
    """One line on the transports of this installation (for `segdl --version`)."""
    if _CURL_MISSING is None:
        return f"transport: {curl.version()} with HTTP/2 for requests, sockets for ranges"
    return f"transport: requests and sockets only ({_CURL_MISSING})"


def open_transport(url: str, options: Options) -> Transport:
    """A transport for one remote file with connections of its own (closed with it). Its
    requests are few and its bytes many: the socket path serves it, unless libcurl is
    asked for by name, or HTTP/2 is (`--http2`: its ranges then share one connection)."""
    choice = _choice(options)
    if choice == "curl" or (
        choice == "auto" and options.http_version == "2" and _CURL_MISSING is None
    ):
        return curl.CurlTransport(url, options)
    return RequestsTransport(url, options)


def open_pool(options: Options, *, hosts: int = 1, per_host: int = 0) -> ConnectionPool:
    """Connections for a run of many files (`hosts`: origins kept alive at once; `per_host`:
    connections to one host at most, 0 for no cap of the transport's own)."""
    if uses_curl(options):
        return curl.CurlPool(options, hosts=hosts, per_host=per_host)
    return RequestsPool(options, hosts=hosts)
