"""Shared fixtures: threaded loopback range servers (see tests/rangeserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rangeserver import RangeHTTPServer


def _running(host: str, *, keep_alive: bool = False) -> Iterator[RangeHTTPServer]:
    """Start a RangeHTTPServer, yield it, then stop it and re-raise handler-thread failures."""
    server = RangeHTTPServer(host=host, port=0, threaded=True, keep_alive=keep_alive)
    server.start()
    yield server
    if server.is_running():
        server.stop()
    try:
        server.check_assertions()
        server.check_handler_errors()
    finally:
        server.clear()


@pytest.fixture
def rangeserver() -> Iterator[RangeHTTPServer]:
    """A started, threaded RangeHTTPServer on 127.0.0.1 with an ephemeral port.

    Teardown stops it first (aborting throttled or stalled responses and waiting for the
    handler threads), then re-raises assertions and errors collected in handler threads.
    """
    yield from _running("127.0.0.1")


@pytest.fixture
def rangeserver2() -> Iterator[RangeHTTPServer]:
    """Like ``rangeserver`` but on 127.0.0.2: a second host (Linux routes 127/8 to lo)."""
    yield from _running("127.0.0.2")


@pytest.fixture
def keepalive_server() -> Iterator[RangeHTTPServer]:
    """Like ``rangeserver`` (127.0.0.1) with ``keep_alive=True``: persistent connections."""
    yield from _running("127.0.0.1", keep_alive=True)


@pytest.fixture
def keepalive_server2() -> Iterator[RangeHTTPServer]:
    """Like ``rangeserver2`` (127.0.0.2) with ``keep_alive=True``: persistent connections."""
    yield from _running("127.0.0.2", keep_alive=True)


@pytest.fixture
def httpserver(rangeserver: RangeHTTPServer) -> RangeHTTPServer:
    """Overrides pytest-httpserver's single-threaded fixture with the threaded range server."""
    return rangeserver
