"""The interface of a transport, as the jobs use it: a `Transport` per remote file, the
`ResponseBody`s it opens, and the run-wide `ConnectionPool` a batch shares between files.

Only what code outside `segdl.core.http` uses is here; each implementation (today
`transport`, on requests) adds its own details beside it, and `segdl.core.http` makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from ...errors import ConnectError
from ..urls import Origin, origin
from .semantics import Headers, Response, Validators


class ResponseBody(Protocol):
    """A checked answer whose body is read straight into the caller's buffer."""

    # Called once when the body is closed (the fetch seam gives back the request's slot).
    on_close: Callable[[], None] | None

    @property
    def headers(self) -> Headers: ...
    @property
    def status(self) -> int: ...
    @property
    def length(self) -> int | None:
        """The exact number of body bytes expected, None when unknown."""

    @property
    def protocol(self) -> str:
        """The HTTP version that carried it: "HTTP/1.1" or "HTTP/2"."""

    @property
    def in_memory(self) -> bool:
        """The whole answer has arrived and waits in memory: reading it will not wait."""

    def readinto(self, view: memoryview) -> int:
        """Read up to len(view) body bytes; 0 only at the clean end of the body (a body that
        ends short of `length` raises TruncatedError)."""

    def check_no_more(self) -> None:
        """After the promised bytes, raise ProtocolViolation if the body goes on."""

    def close(self) -> None:
        """Release the connection (kept for reuse when the body was read to its end); gives
        `on_close` its one call."""

    def abort(self) -> None:
        """From another thread: make a read blocked in this body return at once."""


class Transport(Protocol):
    """Redirects and validated requests for one remote file; every error a `SegdlError`."""

    @property
    def url(self) -> str:
        """The URL the user gave: its origin decides where user headers may go."""

    def request(
        self, method: str, url: str, extra_headers: Mapping[str, str] | None = None
    ) -> tuple[Response, str]:
        """Send a request, following redirects; the answer (body unread) and the URL it came
        from."""

    def open_range(
        self, url: str, start: int, stop: int, *, total: int, validators: Validators
    ) -> ResponseBody:
        """GET `[start, stop)` of a `total`-byte file, checked before any body is read."""

    def start_first(
        self, url: str, on_settled: Callable[[ResponseBody], None]
    ) -> ResponseBody | None:
        """Send a batch item's first GET without waiting, where the transport can: the
        unchecked body, whose `on_settled(body)` comes (from another thread) once the answer
        is whole or fills the transport's window; None where it cannot (then `open_first`)."""

    def open_first(
        self,
        url: str,
        *,
        accept: tuple[str, ...] = (),
        started: ResponseBody | None = None,
    ) -> tuple[ResponseBody, str]:
        """A batch item's GET of `bytes=0-`, which sizes the file and carries its body; the
        checked body and the URL redirects led to. `started`: what `start_first` sent, to
        check instead of sending a new request."""

    def open_stream(self, url: str, offset: int, *, validators: Validators) -> ResponseBody:
        """GET the whole file, or from `offset` on to continue a single stream."""

    def reconnect(self) -> None:
        """Drop this thread's idle connections: its next request opens a new one."""

    def abort(self) -> None:
        """From another thread: cut this transport's own requests still waiting for an answer."""

    def close(self) -> None:
        """Release the connections, unless they are a `ConnectionPool`'s (the pool's owner
        closes it)."""


class ConnectionPool(Protocol):
    """Connections a run shares between the transports of its files (kept alive between them)."""

    def transport(self, url: str) -> Transport:
        """A transport for `url` over this pool."""

    def abort(self) -> None:
        """From another thread: cut the requests in flight (the run is stopping)."""

    def close(self) -> None: ...


class AnsweredHosts:
    """The origins that answered a request of this run: the retry policy is patient with
    them (see `ConnectError.answered_before`). Shared by every transport of a pool."""

    def __init__(self) -> None:
        self._answered: set[Origin] = set()

    @contextmanager
    def requesting(
        self, url: str, translated: Callable[[str], AbstractContextManager[None]]
    ) -> Iterator[None]:
        """Around one request to `url`: translate its errors (`translated(url)`, the
        transport's own), tell a connection error whether the host answered earlier in this
        run, and remember that it answered now."""
        key = origin(url)
        try:
            with translated(url):
                yield
        except ConnectError as exc:
            exc.answered_before = key in self._answered
            raise
        self._answered.add(key)  # set.add is atomic: threads share this set without a lock
