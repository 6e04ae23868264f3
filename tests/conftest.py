"""Shared fixtures: threaded loopback range servers (see tests/rangeserver.py), and a real
nginx with TLS and HTTP/2 (see tests/nginx.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from nginx import NginxServer, nginx_binary
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


NGINX_MISSING = "nginx is not installed (apt-get install nginx; .ci/run installs it)"
CAPPED_STREAMS = 4  # nginx_h2_capped's SETTINGS_MAX_CONCURRENT_STREAMS


def _nginx(prefix: Path, max_concurrent_streams: int) -> Iterator[NginxServer]:
    if nginx_binary() is None:
        pytest.skip(NGINX_MISSING)
    with NginxServer(prefix, max_concurrent_streams=max_concurrent_streams) as server:
        yield server


@pytest.fixture
def nginx_h2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """A started nginx: `url(name)` is HTTPS with HTTP/2 (ALPN h2, http/1.1) trusting
    `ca_path`, `http_url(name)` plain HTTP/1.1; both serve the files put in `root`;
    `requests()` parses its access log (protocol, status, range, connection numbers).
    Skipped only where nginx is not installed."""
    yield from _nginx(tmp_path_factory.mktemp("nginx"), 128)


@pytest.fixture
def nginx_h2_capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """Like nginx_h2, but it announces SETTINGS_MAX_CONCURRENT_STREAMS = CAPPED_STREAMS (4):
    a client may have at most 4 requests in flight on one HTTP/2 connection."""
    yield from _nginx(tmp_path_factory.mktemp("nginx-capped"), CAPPED_STREAMS)


# Modules whose every test runs once per transport (`SEGDL_TRANSPORT`): the behaviour of
# requests, redirects, TLS, ranges, faults, batches, cookies and proxies must not depend on
# which one sends. The rest of the suite runs on the default ("auto": libcurl where pycurl
# imports); streams and resume go over the same socket path on both (only their probe
# differs), so they run once.
BOTH_TRANSPORTS = frozenset(
    {
        "test_download",
        "test_hostile",
        "test_faults",
        "test_fail_fast",
        "test_batch",
        "test_cookies",
        "test_proxies",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ in BOTH_TRANSPORTS:
        metafunc.parametrize("segdl_transport", ["curl", "python"], indirect=True)


@pytest.fixture(autouse=True)
def segdl_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The transport this test runs on (children started by the test inherit it)."""
    choice: str | None = getattr(request, "param", None)
    if choice is None:
        return os.environ.get("SEGDL_TRANSPORT", "auto")
    if choice == "curl":
        from segdl.core.http import curl_missing

        missing = curl_missing()
        if missing is not None:
            pytest.skip(f"the libcurl transport cannot run here: {missing}")
    monkeypatch.setenv("SEGDL_TRANSPORT", choice)
    return choice
