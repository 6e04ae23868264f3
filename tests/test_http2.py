"""HTTP/2 through the libcurl transport, against a real nginx (TLS with ALPN, HTTP/2).

What nginx logged is the evidence: the protocol of every request, and the connections they
came over (`--per-host` keeps counting connections; `--streams` requests share one). Every
download is compared with the served bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env
from nginx import NginxServer

import segdl
from segdl.core.http import curl_missing

pytestmark = pytest.mark.skipif(
    curl_missing() is not None, reason=f"the libcurl transport cannot run here: {curl_missing()}"
)

KIB = 1024


def _files(server: NginxServer, count: int, size: int = 16 * KIB) -> dict[str, bytes]:
    served = {}
    for i in range(count):
        name = f"f{i:04d}.bin"
        data = os.urandom(size)
        (server.root / name).write_bytes(data)
        served[name] = data
    return served


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`segdl ARGV` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "segdl", *argv],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _listing(tmp_path: Path, urls: list[str]) -> Path:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{url}\n" for url in urls))
    return listing


def _same(out: Path, served: dict[str, bytes]) -> None:
    assert sorted(p.name for p in out.iterdir() if p.name != ".segdl") == sorted(served)
    for name, data in served.items():
        assert (out / name).read_bytes() == data, name


def test_a_batch_over_https_speaks_http2_on_the_connections_per_host_allows(
    nginx_h2: NginxServer, tmp_path: Path
) -> None:
    served = _files(nginx_h2, 60)
    listing = _listing(tmp_path, [nginx_h2.url(name) for name in served])
    out = tmp_path / "out"
    proc = cli(
        "-i", str(listing), "-d", str(out), "-j", "32", "--per-host", "1", "--streams", "16",
        "--ca-certificate", str(nginx_h2.ca_path), "--transport", "curl", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _same(out, served)
    log = nginx_h2.wait_requests(60)
    assert {record.protocol for record in log} == {"HTTP/2.0"}
    assert len({record.connection for record in log}) == 1  # --per-host 1: one connection
    assert max(record.connection_requests for record in log) == 60


def test_http1_1_forces_http1_and_counts_connections_again(
    nginx_h2: NginxServer, tmp_path: Path
) -> None:
    served = _files(nginx_h2, 24)
    listing = _listing(tmp_path, [nginx_h2.url(name) for name in served])
    out = tmp_path / "out"
    proc = cli(
        "-i", str(listing), "-d", str(out), "-j", "8", "--per-host", "2", "--http1.1",
        "--ca-certificate", str(nginx_h2.ca_path), "--transport", "curl", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _same(out, served)
    log = nginx_h2.wait_requests(24)
    assert {record.protocol for record in log} == {"HTTP/1.1"}
    assert len({record.connection for record in log}) <= 2


def test_a_server_that_allows_fewer_streams_is_obeyed(
    nginx_h2_capped: NginxServer, tmp_path: Path
) -> None:
    served = _files(nginx_h2_capped, 40)
    listing = _listing(tmp_path, [nginx_h2_capped.url(name) for name in served])
    out = tmp_path / "out"
    proc = cli(
        "-i", str(listing), "-d", str(out), "-j", "32", "--per-host", "1", "--streams", "32",
        "--ca-certificate", str(nginx_h2_capped.ca_path), "--transport", "curl", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _same(out, served)
    log = nginx_h2_capped.wait_requests(40)
    assert {record.protocol for record in log} == {"HTTP/2.0"}
    assert len({record.connection for record in log}) == 1


@pytest.mark.parametrize(
    "asked", [{"transport": "curl"}, {"http_version": "2"}], ids=["libcurl", "http2"]
)
def test_a_big_file_over_http2_multiplexes_its_ranges(
    nginx_h2: NginxServer, tmp_path: Path, asked: dict[str, str]
) -> None:
    data = os.urandom(24 * 1024 * KIB)
    (nginx_h2.root / "big.bin").write_bytes(data)
    out = tmp_path / "big.bin"
    segdl.download(
        nginx_h2.url("big.bin"),
        out,
        connections=4,
        verify=str(nginx_h2.ca_path),
        **asked,  # type: ignore[arg-type]
    )
    assert out.read_bytes() == data
    log = nginx_h2.requests()
    assert {record.protocol for record in log} == {"HTTP/2.0"}
    ranges = [record for record in log if record.range]
    assert len(ranges) >= 2  # split into ranges...
    assert len({record.connection for record in log}) == 1  # ...on one connection


def test_the_report_says_which_protocol_each_item_spoke(
    nginx_h2: NginxServer, tmp_path: Path
) -> None:
    served = _files(nginx_h2, 3)
    urls = [nginx_h2.url(name) for name in served]
    (nginx_h2.root / "plain.bin").write_bytes(b"plain")
    urls.append(nginx_h2.http_url("plain.bin"))
    listing = _listing(tmp_path, urls)
    out = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    proc = cli(
        "-i", str(listing), "-d", str(out), "--report", str(report),
        "--ca-certificate", str(nginx_h2.ca_path), "--transport", "curl", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    protocols = {row["url"]: row["protocol"] for row in rows}
    assert protocols == {
        **{url: "HTTP/2" for url in urls[:3]},
        urls[3]: "HTTP/1.1",
    }


def test_a_single_file_takes_the_socket_path_unless_asked(
    nginx_h2: NginxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file's requests are few: HTTP/1.1 ranges over sockets, as before libcurl."""
    monkeypatch.delenv("SEGDL_TRANSPORT", raising=False)
    data = os.urandom(8 * 1024 * KIB)
    (nginx_h2.root / "one.bin").write_bytes(data)
    out = tmp_path / "one.bin"
    segdl.download(nginx_h2.url("one.bin"), out, connections=4, verify=str(nginx_h2.ca_path))
    assert out.read_bytes() == data
    assert {record.protocol for record in nginx_h2.requests()} == {"HTTP/1.1"}


def test_the_python_transport_speaks_http1_to_the_same_server(
    nginx_h2: NginxServer, tmp_path: Path
) -> None:
    served = _files(nginx_h2, 8)
    out = tmp_path / "out"
    results = segdl.download_many(
        [nginx_h2.url(name) for name in served],
        out,
        verify=str(nginx_h2.ca_path),
        transport="python",
    )
    assert {r.status for r in results} == {"ok"}
    _same(out, served)
    assert {record.protocol for record in nginx_h2.wait_requests(8)} == {"HTTP/1.1"}
