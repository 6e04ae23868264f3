"""Downloads through real proxies (tests/proxies.py: tinyproxy for HTTP and CONNECT, microsocks
for SOCKS5): ranges, resume, streams, batches, https through a tunnel, --noproxy and the
environment, and the one-line errors of a proxy that is down or refuses the credentials.
What went through the proxy is read from the proxy's log (and from the `Via` header tinyproxy
adds to what it forwards), and every download is compared with the served bytes."""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from fakes import payload
from helpers import cli, one_line_error
from proxies import Proxy, TLSFront, free_port, start_microsocks, start_tinyproxy
from rangeserver import Faults, RangeHTTPServer, serve_file

import segdl
from segdl.core.events import TransferListener

__all__ = ["start_microsocks", "start_tinyproxy"]  # the fixtures, imported for these tests

MIB = 1 << 20
SECRET = "s3cret-Pa55"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the proxy environment themselves."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# The child imports this checkout's segdl, wherever the installed one points.
CHILD_ENV = {
    **{k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES},
    "PYTHONPATH": str(Path(segdl.__file__).resolve().parents[1]),
}


def run(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segdl", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**CHILD_ENV, **(env or {})},
    )


def gets(proxy: Proxy) -> list[str]:
    return [target for method, target in proxy.requests() if method == "GET"]


def connects(proxy: Proxy) -> list[str]:
    return [target for method, target in proxy.requests() if method == "CONNECT"]


def all_via_tinyproxy(server: RangeHTTPServer, proxy: Proxy | None = None) -> None:
    """Every request the server saw came through tinyproxy (which adds a Via header), and
    the proxy's log lists them (method and absolute URL), when given."""
    assert server.requests
    for record in server.requests:
        assert "tinyproxy" in (record.headers.get("Via") or ""), record.headers
    if proxy is not None:
        origin = f"http://{server.host}:{server.port}"
        seen = sorted((r.method, origin + r.path) for r in server.requests)
        assert sorted(proxy.requests()) == seen


# -- HTTP proxy (tinyproxy) ------------------------------------------------------------------


def test_ranges_through_an_http_proxy(
    rangeserver: RangeHTTPServer, start_tinyproxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_tinyproxy()
    data = payload(4 * MIB)
    served = serve_file(rangeserver, "/f.bin", data)
    result = segdl.download(
        served.url, tmp_path / "f.bin", proxy=proxy.url, connections=4, min_split=MIB
    )
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.connections > 1
    assert len(served.ranges_requested()) > 1  # several ranges, every one through the proxy
    all_via_tinyproxy(rangeserver, proxy)


def test_resume_through_an_http_proxy(
    rangeserver: RangeHTTPServer, start_tinyproxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_tinyproxy()
    size = 8 * MIB
    data = payload(size)
    served = serve_file(rangeserver, "/f.bin", data, faults=Faults(rate=8 * MIB))
    cancel = threading.Event()

    class StopAtHalf(TransferListener):
        def progress(self, done: int, total: int | None, connections: int) -> None:
            if done >= size // 2:
                cancel.set()

    with pytest.raises(segdl.Interrupted):
        segdl.download(
            served.url,
            tmp_path / "f.bin",
            proxy=proxy.url,
            connections=2,
            min_split=MIB,
            listener=StopAtHalf(),
            cancel=cancel,
        )
    assert (tmp_path / "f.bin.part").exists()
    served.faults.rate = None
    first = served.bytes_sent()
    served.clear_log()
    segdl.download(served.url, tmp_path / "f.bin", proxy=proxy.url, connections=2, min_split=MIB)
    assert (tmp_path / "f.bin").read_bytes() == data
    # Only what was missing: the bytes the first run got are not fetched again.
    assert first >= size // 2
    assert 0 < served.bytes_sent() <= size - first + 2 * MIB < size
    all_via_tinyproxy(rangeserver)


def test_stream_through_an_http_proxy(
    rangeserver: RangeHTTPServer, start_tinyproxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_tinyproxy()
    data = payload(3 * MIB)
    served = serve_file(rangeserver, "/s.bin", data)
    with segdl.open(served.url, proxy=proxy.url, connections=3, min_split=MIB) as remote:
        assert remote.read() == data
    all_via_tinyproxy(rangeserver, proxy)
    # The command's `-o -`, the proxy from --proxy.
    rangeserver.reset_stats()
    proc = subprocess.run(
        [sys.executable, "-m", "segdl", served.url, "-o", "-", "--proxy", proxy.url, "-q"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=CHILD_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    all_via_tinyproxy(rangeserver)


def test_batch_through_an_http_proxy_keeps_the_credentials_out_of_report_and_journal(
    rangeserver: RangeHTTPServer, start_tinyproxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_tinyproxy(auth=("alice", SECRET))
    files = {f"/{i}.bin": payload(1000 * (i + 1), seed=i) for i in range(5)}
    urls = [serve_file(rangeserver, path, data).url for path, data in files.items()]
    out = tmp_path / "out"
    proc = run(*urls, "-d", str(out), "--proxy", proxy.url, "--report", "r.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for path, data in files.items():
        assert (out / path.lstrip("/")).read_bytes() == data
    all_via_tinyproxy(rangeserver)
    all_via_tinyproxy(rangeserver, proxy)
    # Neither the password nor the Basic credentials are written anywhere.
    written = [tmp_path / "r.csv", *(p for p in out.rglob("*") if p.is_file())]
    assert any(".segdl" in p.parts for p in written)  # the journal is among them
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in proc.stderr + proc.stdout


# -- HTTPS through a CONNECT tunnel ------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[RangeHTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = RangeHTTPServer(host="127.0.0.1", port=0, threaded=True, ssl_context=context)
    server.start()
    yield server
    server.stop()
    server.check_assertions()
    server.clear()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_https_through_a_connect_tunnel(
    tls_server: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    ca_file: str,
    tmp_path: Path,
) -> None:
    proxy = start_tinyproxy(connect_ports=[tls_server.port], auth=("alice", SECRET))
    data = payload(4 * MIB)
    served = serve_file(tls_server, "/t.bin", data)
    segdl.download(
        served.url,
        tmp_path / "t.bin",
        proxy=proxy.url,
        verify=ca_file,
        connections=4,
        min_split=MIB,
    )
    assert (tmp_path / "t.bin").read_bytes() == data
    tunnels = connects(proxy)
    assert tunnels and set(tunnels) == {f"127.0.0.1:{tls_server.port}"}
    assert gets(proxy) == []
    # Kept-alive tunnels carry several requests each: no more tunnels than requests.
    assert len(tunnels) <= len(tls_server.requests)
    assert len(served.ranges_requested()) > 1


def test_a_connect_port_the_proxy_refuses_is_one_line(
    tls_server: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    ca_file: str,
    tmp_path: Path,
) -> None:
    proxy = start_tinyproxy(connect_ports=[1])
    served = serve_file(tls_server, "/t.bin", payload(1000))
    proc = run(
        served.url, "-o", "t.bin", "--proxy", proxy.url, "--ca-certificate", ca_file, cwd=tmp_path
    )
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert f"proxy http://127.0.0.1:{proxy.port}" in line and "403" in line
    assert len(connects(proxy)) == 1  # not retried
    assert tls_server.requests == []


# -- SOCKS5 (microsocks) -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_proxies(
    rangeserver: RangeHTTPServer,
    start_microsocks: Callable[..., Proxy],
    tmp_path: Path,
    scheme: str,
) -> None:
    proxy = start_microsocks(auth=("bob", SECRET))
    data = payload(3 * MIB)
    served = serve_file(rangeserver, "/f.bin", data)
    url = served.url.replace("127.0.0.1", "localhost")
    segdl.download(
        url, tmp_path / "f.bin", proxy=proxy.url_with(scheme), connections=3, min_split=MIB
    )
    assert (tmp_path / "f.bin").read_bytes() == data
    targets = connects(proxy)
    # socks5h: the proxy got the name to resolve; socks5: the address we resolved.
    host = "localhost" if scheme == "socks5h" else "127.0.0.1"
    assert targets and set(targets) == {f"{host}:{rangeserver.port}"}
    assert len(targets) == rangeserver.connections_opened
    assert len(served.ranges_requested()) > 1


def test_https_through_socks5h_and_a_batch(
    tls_server: RangeHTTPServer,
    start_microsocks: Callable[..., Proxy],
    ca_file: str,
    tmp_path: Path,
) -> None:
    proxy = start_microsocks()
    files = {f"/{i}.bin": payload(5000 + i, seed=i) for i in range(4)}
    urls = [
        serve_file(tls_server, path, data).url.replace("127.0.0.1", "localhost")
        for path, data in files.items()
    ]
    results = segdl.download_many(
        urls, tmp_path, proxy=proxy.url_with("socks5h"), verify=ca_file, journal=False
    )
    assert [r.status for r in results] == ["ok"] * 4
    for path, data in files.items():
        assert (tmp_path / path.lstrip("/")).read_bytes() == data
    targets = connects(proxy)
    assert targets and set(targets) == {f"localhost:{tls_server.port}"}
    assert len(targets) == tls_server.connections_opened


# -- which URLs go through a proxy --------------------------------------------------------------


def test_noproxy_and_the_environment(
    rangeserver: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = start_tinyproxy()
    data = payload(100_000)
    served = serve_file(rangeserver, "/f.bin", data)
    port = rangeserver.port

    def fetched(name: str, *args: str) -> int:
        """How many requests the proxy saw for one download (checked byte for byte)."""
        before = len(proxy.requests())
        code, _, err = cli(capsys, served.url, "-o", str(tmp_path / name), *args)
        assert code == 0, err
        assert (tmp_path / name).read_bytes() == data
        return len(proxy.requests()) - before

    assert fetched("a", "--proxy", proxy.url) > 0
    assert fetched("b", "--proxy", proxy.url, "--noproxy", "127.0.0.1") == 0
    assert fetched("c", "--proxy", proxy.url, "--noproxy", f"example.com,127.0.0.1:{port}") == 0
    assert fetched("d", "--proxy", proxy.url, "--noproxy", "127.0.0.0/8") == 0
    assert fetched("e", "--proxy", proxy.url, "--noproxy", "*") == 0
    assert fetched("f", "--proxy", proxy.url, "--noproxy", f"127.0.0.1:{port + 1}") > 0
    assert fetched("g", "--proxy", proxy.url, "--noproxy", "example.com") > 0
    # The environment's proxy, unless NO_PROXY names the host or --no-proxy-env.
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert fetched("h") > 0
    assert fetched("i", "--no-proxy-env") == 0
    assert fetched("j", "--noproxy", "127.0.0.1") == 0
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert fetched("k") == 0
    # An explicit proxy wins over NO_PROXY (curl: --noproxy is the list for --proxy).
    assert fetched("l", "--proxy", proxy.url) > 0


# -- errors ------------------------------------------------------------------------------------


def test_refused_credentials_are_one_line_without_the_password(
    rangeserver: RangeHTTPServer,
    tls_server: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    start_microsocks: Callable[..., Proxy],
    ca_file: str,
    tmp_path: Path,
) -> None:
    tiny = start_tinyproxy(connect_ports=[tls_server.port], auth=("alice", SECRET))
    socks = start_microsocks(auth=("bob", SECRET))
    plain = serve_file(rangeserver, "/f.bin", payload(1000)).url
    tls = serve_file(tls_server, "/t.bin", payload(1000)).url
    wrong = "wrong-" + SECRET
    cases = [
        # (URL, proxy, what the line says, the proxy as the line names it)
        (
            tls,
            tiny.url_with(password=wrong),
            "refused the credentials",
            f"alice@127.0.0.1:{tiny.port}",
        ),
        (
            plain,
            f"http://127.0.0.1:{tiny.port}",
            "requires credentials (407)",
            f"http://127.0.0.1:{tiny.port}",
        ),
        (
            plain,
            socks.url_with(password=wrong),
            "refused the credentials",
            f"socks5://bob@127.0.0.1:{socks.port}",
        ),
        (
            plain,
            f"socks5h://127.0.0.1:{socks.port}",
            "requires credentials",
            f"socks5h://127.0.0.1:{socks.port}",
        ),
    ]
    for url, proxy_url, says, named in cases:
        before = len(tiny.requests())
        proc = run(url, "-o", "x", "--proxy", proxy_url, "--ca-certificate", ca_file, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line_error(proc.stderr)
        assert says in line and named in line, line
        assert SECRET not in proc.stderr
        assert len(tiny.requests()) - before <= 1  # never retried as if the origin were down
    assert rangeserver.requests == [] and tls_server.requests == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_an_unreachable_proxy_is_one_line(
    rangeserver: RangeHTTPServer, tmp_path: Path, scheme: str
) -> None:
    port = free_port()  # nothing listens there
    served = serve_file(rangeserver, "/f.bin", payload(1000))
    proxy = f"{scheme}://carol:{SECRET}@127.0.0.1:{port}"
    for argv in ([served.url, "-o", "x"], [served.url, served.url + "?2", "-d", "out"]):
        proc = run(*argv, "--proxy", proxy, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line_error(proc.stderr)
        assert f"proxy {scheme}://carol@127.0.0.1:{port}: connection failed" in line, line
        assert SECRET not in proc.stderr
    assert rangeserver.requests == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"ftp://dave:{SECRET}@127.0.0.1:21", "unsupported proxy scheme 'ftp'"),
        (f"socks4://dave:{SECRET}@127.0.0.1", "unsupported proxy scheme 'socks4'"),
        (f"http://dave:{SECRET}@127.0.0.1:99999", "invalid proxy URL"),
        (f"http://dave:{SECRET}@127.0.0.1:3128/path", "no path"),
        ("http://", "no host"),
    ],
)
def test_a_bad_proxy_url_is_a_usage_error(
    rangeserver: RangeHTTPServer, tmp_path: Path, value: str, says: str
) -> None:
    served = serve_file(rangeserver, "/f.bin", payload(10))
    for argv in (
        [served.url, "-o", "x"],
        [served.url, served.url, "-d", "out"],
        [served.url, "-o", "-"],
    ):
        proc = run(*argv, "--proxy", value, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        line = one_line_error(proc.stderr)
        assert says in line, line
        assert SECRET not in proc.stderr
    assert rangeserver.requests == []
    with pytest.raises(segdl.UsageError, match=says):
        segdl.download(served.url, tmp_path / "y", proxy=value)


# -- an https:// proxy (TLS to the proxy) -------------------------------------------------------


def test_an_https_proxy_for_http_and_https_targets(
    rangeserver: RangeHTTPServer,
    tls_server: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    ca: trustme.CA,
    ca_file: str,
    tmp_path: Path,
) -> None:
    tiny = start_tinyproxy(connect_ports=[tls_server.port], auth=("alice", SECRET))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    front = TLSFront(tiny.port, context)
    try:
        proxy = f"https://alice:{SECRET}@127.0.0.1:{front.port}"
        data = payload(3 * MIB)
        plain = serve_file(rangeserver, "/f.bin", data)
        tls = serve_file(tls_server, "/t.bin", data)
        for url, name in ((plain.url, "f.bin"), (tls.url, "t.bin")):
            segdl.download(
                url, tmp_path / name, proxy=proxy, verify=ca_file, connections=3, min_split=MIB
            )
            assert (tmp_path / name).read_bytes() == data
        all_via_tinyproxy(rangeserver)
        assert set(connects(tiny)) == {f"127.0.0.1:{tls_server.port}"}
        assert len(tiny.requests()) == front.accepted  # every one through the TLS front
        # The proxy's certificate is checked like a server's.
        with pytest.raises(
            segdl.ProxyError, match=f"proxy https://alice@127.0.0.1:{front.port}: TLS"
        ):
            segdl.download(plain.url, tmp_path / "x", proxy=proxy)
    finally:
        front.close()


def test_with_a_netrc_requests_goes_through_the_same_proxy(
    rangeserver: RangeHTTPServer,
    start_tinyproxy: Callable[..., Proxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A .netrc sends every request through requests (which reads it); the proxy is still
    # the one `proxy_for` chose, never one requests takes from the environment on its own.
    (tmp_path / ".netrc").write_text("machine elsewhere.example login u password p\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    proxy = start_tinyproxy(auth=("alice", SECRET))
    data = payload(2 * MIB)
    served = serve_file(rangeserver, "/f.bin", data)
    segdl.download(served.url, tmp_path / "a", proxy=proxy.url, connections=2, min_split=MIB)
    assert (tmp_path / "a").read_bytes() == data
    all_via_tinyproxy(rangeserver, proxy)
    rangeserver.reset_stats()
    seen = len(proxy.requests())
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    segdl.download(served.url, tmp_path / "b", noproxy="127.0.0.1", connections=2, min_split=MIB)
    assert (tmp_path / "b").read_bytes() == data
    assert len(proxy.requests()) == seen and rangeserver.requests


def test_extract_a_zip_through_a_proxy(
    rangeserver: RangeHTTPServer, start_microsocks: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = start_microsocks()
    members = {f"d/{i}.bin": payload(20_000 + i, seed=i) for i in range(3)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    served = serve_file(rangeserver, "/a.zip", buffer.getvalue())
    segdl.extract(served.url, tmp_path / "x", proxy=proxy.url_with("socks5h"))
    for name, data in members.items():
        assert (tmp_path / "x" / name).read_bytes() == data
    targets = connects(proxy)
    assert targets and set(targets) == {f"127.0.0.1:{rangeserver.port}"}
    assert len(targets) == rangeserver.connections_opened
