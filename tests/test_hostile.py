"""Hostile servers: names, symlinks, redirects, credentials, TLS, proxies. One test per hazard.

Each asserts that nothing was written outside the destination, no file stands under the final
name unless it is the remote's bytes, and the user's files are untouched.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import urllib3
from fakes import payload
from rangeserver import Faults, RangeHTTPServer, serve_file

import segdl

MIB = 1024 * 1024


@pytest.fixture
def second_server() -> Iterator[RangeHTTPServer]:
    """Another origin: same host, another port."""
    server = RangeHTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()
    server.check_assertions()
    server.clear()


def redirect(server: RangeHTTPServer, path: str, location: str, status: int = 302) -> None:
    server.expect_request(path).respond_with_data("", status=status, headers={"Location": location})


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        'attachment; filename="../../escape.bin"',
        "attachment; filename*=UTF-8''..%2F..%2Fescape.bin",
        'attachment; filename="..\\\\..\\\\escape.bin"',
        "attachment; filename*=UTF-8''%2Ftmp%2Fescape.bin",
    ],
)
def test_traversal_in_content_disposition_stays_in_the_directory(
    httpserver: RangeHTTPServer, tmp_path: Path, header: str
) -> None:
    data = payload(100)
    served = serve_file(httpserver, "/x", data, faults=Faults(content_disposition=header))
    out = tmp_path / "out"
    result = segdl.download(served.url, directory=out)
    assert result.path == out / "escape.bin"
    assert result.path.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(out) == ["escape.bin"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/..%2F..%2Fescape.bin", "escape.bin"),
        ("/a/..%5C..%5Cescape.bin", "escape.bin"),
        ("/a/evil%00.bin", "evil.bin"),
        ("/a/..", "download"),
        ("/a/.bashrc", "download"),
        ("/", "download"),
    ],
)
def test_hostile_url_names_are_sanitized(
    httpserver: RangeHTTPServer, tmp_path: Path, path: str, expected: str
) -> None:
    data = payload(10)
    # Any path: clients may normalise dot segments before sending.
    httpserver.expect_request(re.compile(".*")).respond_with_data(data)
    url = httpserver.url_for("/") + path.lstrip("/")
    out = tmp_path / "out"
    try:
        result = segdl.download(url, directory=out)
    except segdl.TransferError:
        pass  # the server may refuse such a path: what matters is where a file may land
    else:
        assert result.path == out / expected
        assert result.path.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert all(name in (expected,) for name in os.listdir(out))


# -- files and symlinks -----------------------------------------------------------------------


def test_symlink_at_part_path_is_not_written_through(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data)
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    (tmp_path / "f.part").symlink_to(victim)
    (tmp_path / "f.segdl").symlink_to(victim)
    segdl.download(served.url, tmp_path / "f", connections=2)
    assert (tmp_path / "f").read_bytes() == data
    assert victim.read_bytes() == b"do not touch"
    assert sorted(os.listdir(tmp_path)) == ["f", "victim"]


def test_symlink_at_destination_is_refused_then_replaced_with_overwrite(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(1000)
    served = serve_file(httpserver, "/f", data)
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    link = tmp_path / "f"
    link.symlink_to(victim)
    with pytest.raises(segdl.DestinationError, match="exists"):
        segdl.download(served.url, link)
    assert link.is_symlink() and victim.read_bytes() == b"do not touch"

    segdl.download(served.url, link, if_exists="overwrite")
    assert not link.is_symlink()  # the link itself was replaced ...
    assert link.read_bytes() == data
    assert victim.read_bytes() == b"do not touch"  # ... never written through


def test_dangling_symlink_at_destination_is_not_followed(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(httpserver, "/f", payload(10))
    (tmp_path / "f").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(segdl.DestinationError):
        segdl.download(served.url, tmp_path / "f")
    assert not (tmp_path / "elsewhere").exists()


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hello", "gopher://x/"]
)
def test_redirect_to_other_schemes_is_refused(
    httpserver: RangeHTTPServer, tmp_path: Path, target: str
) -> None:
    redirect(httpserver, "/r", target)
    with pytest.raises(segdl.RedirectError, match="refused"):
        segdl.download(httpserver.url_for("/r"), tmp_path / "f", retries=0)
    assert os.listdir(tmp_path) == []


def test_redirect_loop_is_detected_quickly(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    redirect(httpserver, "/a", "/b")
    redirect(httpserver, "/b", "/a")
    with pytest.raises(segdl.RedirectError, match="loop"):
        segdl.download(httpserver.url_for("/a"), tmp_path / "f")
    assert len(httpserver.log) <= 3
    assert os.listdir(tmp_path) == []


def test_redirect_limit(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(100)
    for i in range(12):
        redirect(httpserver, f"/r{i}", f"/r{i + 1}")
    serve_file(httpserver, "/r12", data)
    with pytest.raises(segdl.RedirectError, match="more than 10"):
        segdl.download(httpserver.url_for("/r0"), tmp_path / "f")
    segdl.download(httpserver.url_for("/r0"), tmp_path / "f", max_redirects=12)
    assert (tmp_path / "f").read_bytes() == data


SECRETS = {"Authorization": "Bearer s3cret", "Cookie": "session=abc", "X-Api-Key": "k"}


def test_cross_origin_redirect_drops_credentials_and_user_headers(
    httpserver: RangeHTTPServer, second_server: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(second_server, "/real", data)
    redirect(httpserver, "/start", served.url)
    segdl.download(httpserver.url_for("/start"), tmp_path / "f", headers=SECRETS, connections=2)
    assert (tmp_path / "f").read_bytes() == data
    first = [request for request, _ in httpserver.log]
    assert first and all(r.headers.get("Authorization") == "Bearer s3cret" for r in first)
    assert served.requests
    for record in served.requests:
        for name in SECRETS:
            assert name not in record.headers, f"{name} leaked to another origin"


def test_url_credentials_do_not_follow_a_cross_origin_redirect(
    httpserver: RangeHTTPServer, second_server: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(1000)
    served = serve_file(second_server, "/real", data)
    redirect(httpserver, "/start", served.url)
    url = httpserver.url_for("/start").replace("http://", "http://user:pw@")
    segdl.download(url, tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == data
    assert all("Authorization" in r.headers for r, _ in httpserver.log)
    assert all("Authorization" not in r.headers for r in served.requests)


def test_location_trusted_sends_headers_across_origins(
    httpserver: RangeHTTPServer, second_server: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(1000)
    served = serve_file(second_server, "/real", data)
    redirect(httpserver, "/start", served.url)
    segdl.download(
        httpserver.url_for("/start"), tmp_path / "f", headers=SECRETS, location_trusted=True
    )
    assert (tmp_path / "f").read_bytes() == data
    assert all(r.headers.get("X-Api-Key") == "k" for r in served.requests)


def test_same_origin_redirect_keeps_credentials(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/real", data)
    redirect(httpserver, "/start", "/real")
    segdl.download(httpserver.url_for("/start"), tmp_path / "f", headers=SECRETS, connections=2)
    assert (tmp_path / "f").read_bytes() == data
    assert served.requests
    for record in served.requests:
        for name, value in SECRETS.items():
            assert record.headers.get(name) == value


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[RangeHTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
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


def test_tls_is_verified_by_default(
    tls_server: RangeHTTPServer, tmp_path: Path, ca_file: str
) -> None:
    data = payload(2 * MIB)
    served = serve_file(tls_server, "/f", data)
    assert served.url.startswith("https://")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(segdl.TLSError):
        segdl.download(served.url, out / "f", retries=3)
    assert os.listdir(out) == []
    segdl.download(served.url, out / "f", verify=ca_file, connections=2)
    assert (out / "f").read_bytes() == data
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        segdl.download(served.url, out / "g", verify=False)
    assert (out / "g").read_bytes() == data


def test_insecure_cli_warns_in_one_line(tls_server: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(1000)
    served = serve_file(tls_server, "/f", data)
    proc = subprocess.run(
        [sys.executable, "-m", "segdl", served.url, "-o", "f", "--insecure"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert (tmp_path / "f").read_bytes() == data
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "segdl: warning: TLS certificate verification is off (--insecure)"
    # The warning, the final report of `--progress lines` (stderr is a pipe) and the summary:
    # no urllib3 warning text.
    assert len(lines) == 3 and lines[1].startswith("segdl: end: "), lines


def test_missing_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(segdl.UsageError, match="CA certificate file not found"):
        segdl.download("https://127.0.0.1:9/f", tmp_path / "f", verify=str(tmp_path / "no.pem"))
    assert os.listdir(tmp_path) == []


def test_https_to_http_downgrade_is_refused_unless_allowed(
    tls_server: RangeHTTPServer, httpserver: RangeHTTPServer, tmp_path: Path, ca_file: str
) -> None:
    data = payload(1000)
    plain = serve_file(httpserver, "/plain", data)
    redirect(tls_server, "/start", plain.url)
    start = tls_server.url_for("/start")
    with pytest.raises(segdl.RedirectError, match="https to plain http"):
        segdl.download(start, tmp_path / "f", verify=ca_file)
    assert plain.requests == []
    assert not (tmp_path / "f").exists()
    segdl.download(start, tmp_path / "f", verify=ca_file, allow_downgrade=True)
    assert (tmp_path / "f").read_bytes() == data


# -- proxies ----------------------------------------------------------------------------------


def test_environment_proxy_is_honoured_and_can_be_ignored(
    httpserver: RangeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(1000)
    served = serve_file(httpserver, "/f", data)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(segdl.ConnectError):
        segdl.download(served.url, tmp_path / "f", retries=0)
    assert served.requests == []
    segdl.download(served.url, tmp_path / "f", trust_env=False)
    assert (tmp_path / "f").read_bytes() == data
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    segdl.download(served.url, tmp_path / "g")
    assert (tmp_path / "g").read_bytes() == data


def test_nofollow_flag_is_the_real_one() -> None:
    from segdl.core.sink import NOFOLLOW

    assert NOFOLLOW == os.O_NOFOLLOW != 0
