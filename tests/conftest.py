"""Shared fixtures: a threaded loopback range server (see tests/rangeserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rangeserver import RangeHTTPServer


@pytest.fixture
def rangeserver() -> Iterator[RangeHTTPServer]:
    """A started, threaded RangeHTTPServer on 127.0.0.1 with an ephemeral port.

    Teardown stops it first (aborting throttled or stalled responses and waiting for the
    handler threads), then re-raises assertions and errors collected in handler threads.
    """
    server = RangeHTTPServer(host="127.0.0.1", port=0, threaded=True)
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
def httpserver(rangeserver: RangeHTTPServer) -> RangeHTTPServer:
    """Overrides pytest-httpserver's single-threaded fixture with the threaded range server."""
    return rangeserver
