"""HTTP transports behind one interface (`base`): the jobs name the protocols and call the two
factories below; `transport` (requests, with lean kept-alive http.client connections) is the
implementation they make today. Another goes beside it as a module of its own, chosen here.
"""

from __future__ import annotations

from ..options import Options
from .base import ConnectionPool, ResponseBody, Transport
from .semantics import Response, Validators
from .transport import RequestsPool, RequestsTransport, silence_insecure_warnings

__all__ = [
    "ConnectionPool",
    "Response",
    "ResponseBody",
    "Transport",
    "Validators",
    "open_pool",
    "open_transport",
    "silence_insecure_warnings",
]


def open_transport(url: str, options: Options) -> Transport:
    """A transport for one remote file with connections of its own (closed with it)."""
    return RequestsTransport(url, options)


def open_pool(options: Options, *, hosts: int = 1) -> ConnectionPool:
    """Connections for a run of many files (`hosts`: origins kept alive at once)."""
    return RequestsPool(options, hosts=hosts)
