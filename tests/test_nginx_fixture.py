"""The nginx fixtures (tests/nginx.py) really serve the root's files, over HTTP/2 with TLS and
over plain HTTP/1.1, and their access log tells the protocol, the range and the connections.

The client is the system curl (Debian's has HTTP2), or Python's ssl for the SETTINGS frame.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import CAPPED_STREAMS
from nginx import SETTINGS_MAX_CONCURRENT_STREAMS, NginxServer, server_settings

CURL_MISSING = "curl is not installed (apt-get install curl)"


def curl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip(CURL_MISSING)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [binary, "-q", "--silent", "--show-error", *map(str, args)],
        capture_output=True,
        check=False,
        timeout=60,
        env=env,
    )


def put(server: NginxServer, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (server.root / name).write_bytes(data)
    return data


def test_system_curl_speaks_http2() -> None:
    proc = curl("--version")
    assert b"HTTP2" in proc.stdout.split(b"Features:")[-1]


def test_https_is_http2_and_serves_the_bytes(nginx_h2: NginxServer, tmp_path: Path) -> None:
    data = put(nginx_h2, "a.bin", 300_000)
    out = tmp_path / "a.bin"
    proc = curl("--http2", "--cacert", nginx_h2.ca_path, "-o", out, nginx_h2.url("a.bin"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == data
    [record] = nginx_h2.wait_requests(1)
    assert (record.protocol, record.scheme, record.status) == ("HTTP/2.0", "https", 200)
    assert (record.method, record.path) == ("GET", "/a.bin")
    assert record.port == nginx_h2.port
    assert record.body_bytes_sent == len(data)
    assert record.bytes_sent > len(data)  # headers too


def test_http11_forced_over_tls_and_plain_http(nginx_h2: NginxServer, tmp_path: Path) -> None:
    data = put(nginx_h2, "b.bin", 5000)
    tls = curl(
        "--http1.1", "--cacert", nginx_h2.ca_path, "-o", tmp_path / "1", nginx_h2.url("b.bin")
    )
    plain = curl("-o", tmp_path / "2", nginx_h2.http_url("b.bin"))
    assert tls.returncode == plain.returncode == 0
    assert (tmp_path / "1").read_bytes() == (tmp_path / "2").read_bytes() == data
    records = nginx_h2.wait_requests(2)
    assert [(r.protocol, r.scheme) for r in records] == [
        ("HTTP/1.1", "https"),
        ("HTTP/1.1", "http"),
    ]
    assert records[1].port == nginx_h2.http_port


def test_certificate_is_checked_against_the_ca(nginx_h2: NginxServer, tmp_path: Path) -> None:
    put(nginx_h2, "c.bin", 10)
    proc = curl("-o", tmp_path / "c.bin", nginx_h2.url("c.bin"))  # the system's CAs only
    assert proc.returncode == 60  # "SSL certificate problem"
    assert not (tmp_path / "c.bin").exists()
    assert nginx_h2.requests() == []  # the handshake failed: no request


def test_range_is_logged(nginx_h2: NginxServer) -> None:
    data = put(nginx_h2, "r.bin", 1000)
    proc = curl("--cacert", nginx_h2.ca_path, "-r", "10-19", nginx_h2.url("r.bin"))
    assert proc.stdout == data[10:20]
    [record] = nginx_h2.wait_requests(1)
    assert (record.status, record.range, record.body_bytes_sent) == (206, "bytes=10-19", 10)


def test_http2_streams_share_one_connection(nginx_h2: NginxServer, tmp_path: Path) -> None:
    files = {f"m{i}.bin": put(nginx_h2, f"m{i}.bin", 20_000 + i) for i in range(12)}
    urls = [nginx_h2.url(name) for name in files]
    proc = curl(
        "--http2", "--cacert", nginx_h2.ca_path, "-Z", "--parallel-max", "12",
        "--remote-name-all", "--output-dir", tmp_path, *urls,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
    records = nginx_h2.wait_requests(12)
    assert {r.protocol for r in records} == {"HTTP/2.0"}
    assert len({r.connection for r in records}) == 1
    assert sorted(r.path for r in records) == sorted(f"/{name}" for name in files)


def test_http11_keep_alive_counts_requests(nginx_h2: NginxServer) -> None:
    put(nginx_h2, "k.bin", 100)
    url = nginx_h2.http_url("k.bin")
    proc = curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", url, url, url)
    assert proc.returncode == 0, proc.stderr
    records = nginx_h2.wait_requests(3)
    assert len({r.connection for r in records}) == 1
    assert [r.connection_requests for r in records] == [1, 2, 3]
    nginx_h2.clear_log()
    assert nginx_h2.requests() == []


def test_missing_file_is_404(nginx_h2: NginxServer) -> None:
    proc = curl("--cacert", nginx_h2.ca_path, "--fail", nginx_h2.url("nope.bin"))
    assert proc.returncode == 22
    [record] = nginx_h2.wait_requests(1)
    assert (record.status, record.protocol) == (404, "HTTP/2.0")


def test_max_concurrent_streams_is_announced(
    nginx_h2: NginxServer, nginx_h2_capped: NginxServer
) -> None:
    default = server_settings(nginx_h2.port, nginx_h2.ca_path)
    capped = server_settings(nginx_h2_capped.port, nginx_h2_capped.ca_path)
    assert default[SETTINGS_MAX_CONCURRENT_STREAMS] == 128
    assert capped[SETTINGS_MAX_CONCURRENT_STREAMS] == CAPPED_STREAMS


def test_capped_server_still_serves_every_file(
    nginx_h2_capped: NginxServer, tmp_path: Path
) -> None:
    files = {f"s{i}.bin": put(nginx_h2_capped, f"s{i}.bin", 30_000 + i) for i in range(10)}
    urls = [nginx_h2_capped.url(name) for name in files]
    proc = curl(
        "--http2", "--cacert", nginx_h2_capped.ca_path, "-Z", "--parallel-max", "10",
        "--remote-name-all", "--output-dir", tmp_path, *urls,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
    assert {r.protocol for r in nginx_h2_capped.wait_requests(10)} == {"HTTP/2.0"}
