"""Cookies and identity (issue 19): `-b/--cookie`, `--load-cookies FILE` and `--user-agent`.
Cookies go only to the domains and paths they belong to, never to another origin after a
redirect, never into the report or the journal; asserted from the headers the servers saw,
with the downloaded bytes compared with the served ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, files_under, one_line_error
from rangeserver import RangeHTTPServer, pattern_bytes, serve_file
from werkzeug import Response

import segdl
from segdl.core.cookies import Cookie, Cookies, load_cookie_file, parse_cookie_string
from segdl.core.options import USER_AGENT, options_from
from segdl.errors import UsageError

COOKIE_FILE = (
    "# Netscape HTTP Cookie File\n"
    "# written by curl\n"
    "\n"
    "127.0.0.1\tFALSE\t/a\tFALSE\t0\tpathed\tP1\n"
    "127.0.0.1\tFALSE\t/\tFALSE\t0\troot\tR1\n"
    "127.0.0.1\tFALSE\t/\tTRUE\t0\tsecure\tS1\n"
    "#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t0\thttponly\tH1\n"
    "127.0.0.1\tFALSE\t/\tFALSE\t1\texpired\tE1\n"
    "127.0.0.2\tFALSE\t/\tFALSE\t4102444800\tother\tO1\n"
    ".example.com\tTRUE\t/\tFALSE\t0\tdom\tD1\n"
)


def cookies_seen(server: RangeHTTPServer) -> dict[str, set[str | None]]:
    """The Cookie headers each path of `server` received (None: none)."""
    seen: dict[str, set[str | None]] = {}
    for record in server.requests:
        seen.setdefault(record.path, set()).add(record.headers.get("Cookie"))
    return seen


def redirect(server: RangeHTTPServer, path: str, target: str) -> None:
    server.expect_request(path).respond_with_response(
        Response(status=302, headers={"Location": target})
    )


def redirect_cookies(server: RangeHTTPServer, path: str) -> list[str | None]:
    """The Cookie headers of the requests to the redirect at `path` (pytest-httpserver's log)."""
    return [request.headers.get("Cookie") for request, _ in server.log if request.path == path]


# --- pure -------------------------------------------------------------------------------------


def test_header_domains_paths_and_secure(tmp_path: Path) -> None:
    path = tmp_path / "cookies.txt"
    path.write_text(COOKIE_FILE)
    jar = load_cookie_file(path)
    user = "http://127.0.0.1/a/x"
    assert jar.header("http://127.0.0.1/a/x", user) == "pathed=P1; root=R1; httponly=H1"
    assert jar.header("http://127.0.0.1/ab", user) == "root=R1; httponly=H1"  # /a is no prefix
    assert jar.header("https://127.0.0.1/", user) == "root=R1; secure=S1; httponly=H1"
    assert jar.header("http://127.0.0.2/a/x", user) == "other=O1"
    assert jar.header("http://127.0.0.3/", user) is None
    assert jar.header("http://example.com/", user) == "dom=D1"
    assert jar.header("http://cdn.EXAMPLE.com/", user) == "dom=D1"
    assert jar.header("http://badexample.com/", user) is None


def test_string_cookies_go_to_the_users_origin_only() -> None:
    jar = parse_cookie_string("a=1; b=x y")
    user = "http://h.example:8080/f"
    assert jar.header("http://h.example:8080/other/path", user) == "a=1; b=x y"
    for elsewhere in ("http://h.example/f", "https://h.example:8080/f", "http://g.example:8080/"):
        assert jar.header(elsewhere, user) is None


def test_host_only_cookie_and_ip_have_no_subdomains() -> None:
    jar = Cookies((Cookie("n", "v", "example.com"), Cookie("i", "v", "1.2.3.4", True)))
    assert jar.header("http://example.com/", "http://x/") == "n=v"
    assert jar.header("http://a.example.com/", "http://x/") is None
    assert jar.header("http://5.1.2.3.4/", "http://x/") is None


@pytest.mark.parametrize("text", ["", "novalue", "a=1; =2", "a b=1", "a=x\ny"])
def test_bad_cookie_strings(text: str) -> None:
    with pytest.raises(UsageError):
        parse_cookie_string(text)


@pytest.mark.parametrize(
    "content", [b'{"cookies": []}\n', b"\xff\xfe\x00binary", b"# Netscape HTTP Cookie File\nx\ty\n"]
)
def test_not_a_cookie_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="is not a Netscape cookie file"):
        load_cookie_file(path)
    with pytest.raises(UsageError, match="cannot read"):
        load_cookie_file(tmp_path / "missing.txt")


def test_values_stay_out_of_repr(tmp_path: Path) -> None:
    options = options_from({"cookies": "token=s3cret"})
    assert "s3cret" not in repr(options)
    assert options.user_agent == USER_AGENT


# --- end to end -------------------------------------------------------------------------------


def test_cookie_file_by_domain_and_path(
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIE_FILE)
    x = serve_file(rangeserver, "/a/x.bin", pattern_bytes(5000, 1))
    y = serve_file(rangeserver, "/b/y.bin", pattern_bytes(6000, 2))
    z = serve_file(rangeserver2, "/z.bin", pattern_bytes(7000, 3))
    dest, report = tmp_path / "d", tmp_path / "r.jsonl"
    code, _, err = cli(
        capsys,
        x.url,
        y.url,
        z.url,
        "--load-cookies",
        str(cookies),
        "-d",
        str(dest),
        "--report",
        str(report),
    )
    assert code == 0, err
    assert files_under(dest) == {"x.bin": x.data, "y.bin": y.data, "z.bin": z.data}
    assert cookies_seen(rangeserver) == {
        "/a/x.bin": {"pathed=P1; root=R1; httponly=H1"},
        "/b/y.bin": {"root=R1; httponly=H1"},
    }
    assert cookies_seen(rangeserver2) == {"/z.bin": {"other=O1"}}
    # Never written down: not in the report, not in the journal.
    journal = (dest / ".segdl" / "journal.sqlite3").read_bytes()
    for value in (b"P1", b"R1", b"O1", b"H1"):
        assert value not in report.read_bytes() and value not in journal


@pytest.mark.parametrize("batch", [False, True])
def test_no_cookie_across_origins_after_a_redirect(
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    batch: bool,
) -> None:
    # Big enough for ranges on a single download: HEAD (requests) and ranged GETs (lean).
    data = pattern_bytes(3 << 20, 7)
    target = serve_file(rangeserver2, "/f.bin", data)
    local = serve_file(rangeserver, "/here.bin", pattern_bytes(4000, 8))
    redirect(rangeserver, "/r", target.url)
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIE_FILE.replace("127.0.0.2", "127.0.0.9"))
    argv = ["-b", "s=1; t=2", "--load-cookies", str(cookies), "-k", "1M"]
    dest = tmp_path / "d"
    if batch:
        argv += [rangeserver.url_for("/r"), local.url, "-d", str(dest)]
    else:
        argv += [rangeserver.url_for("/r"), "-o", str(dest / "f.bin")]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    # (A batch names the file from the URL it was given: "r".)
    assert files_under(dest) == ({"r": data, "here.bin": local.data} if batch else {"f.bin": data})
    assert cookies_seen(rangeserver2) == {"/f.bin": {None}}
    assert len(target.gets()) >= (1 if batch else 2)
    sent = redirect_cookies(rangeserver, "/r")
    assert sent and set(sent) == {"s=1; t=2; root=R1; httponly=H1"}
    if batch:
        assert cookies_seen(rangeserver)["/here.bin"] == {"s=1; t=2; root=R1; httponly=H1"}


def test_user_agent_seen_by_the_server(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pattern_bytes(3 << 20, 9)
    served = serve_file(rangeserver, "/big.bin", data)
    code, _, err = cli(capsys, served.url, "-o", str(tmp_path / "a.bin"), "-k", "1M")
    assert code == 0, err
    assert (tmp_path / "a.bin").read_bytes() == data
    agents = {r.headers.get("User-Agent") for r in served.requests}
    assert agents == {f"segdl/{segdl.__version__}"}
    assert {r.method for r in served.requests} == {"HEAD", "GET"}  # both HTTP layers
    served.clear_log()
    agent = "datasetbot/1.0 (+https://example.org/bot)"
    code, _, err = cli(
        capsys, served.url, "-o", str(tmp_path / "b.bin"), "-k", "1M", "--user-agent", agent
    )
    assert code == 0, err
    assert (tmp_path / "b.bin").read_bytes() == data
    assert {r.headers.get("User-Agent") for r in served.requests} == {agent}
    # The library too; and a -H User-Agent is the user's own choice, sent once.
    served.clear_log()
    segdl.download(served.url, tmp_path / "c.bin", user_agent="lib/2")
    assert (tmp_path / "c.bin").read_bytes() == data
    assert {r.headers.get("User-Agent") for r in served.requests} == {"lib/2"}
    served.clear_log()
    segdl.download(served.url, tmp_path / "d.bin", headers={"user-agent": "hdr/3"})
    assert (tmp_path / "d.bin").read_bytes() == data
    assert {tuple(r.headers.getlist("User-Agent")) for r in served.requests} == {("hdr/3",)}


def test_library_cookies(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIE_FILE)
    served = serve_file(rangeserver, "/a/x.bin", pattern_bytes(5000, 4))
    results = segdl.download_many([served.url], tmp_path / "d", cookies="k=v", load_cookies=cookies)
    assert [r.status for r in results] == ["ok"]
    assert (tmp_path / "d" / "x.bin").read_bytes() == served.data
    assert cookies_seen(rangeserver) == {"/a/x.bin": {"pathed=P1; k=v; root=R1; httponly=H1"}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--load-cookies", "{cookies}"], "is not a Netscape cookie file"),
        (["--load-cookies", "{missing}"], "cannot read"),
        (["-b", "novalue"], "invalid cookie"),
        (["--user-agent", ""], "user agent"),
    ],
)
def test_usage_errors_before_any_request(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    served = serve_file(rangeserver, "/f.bin", pattern_bytes(1000, 5))
    bad = tmp_path / "cookies.json"
    bad.write_text('{"name": "session", "value": "s3cret"}\n')
    argv = [a.format(cookies=bad, missing=tmp_path / "none.txt") for a in argv]
    code, _, err = cli(capsys, served.url, "-o", str(tmp_path / "f.bin"), *argv)
    assert code == 2
    line = one_line_error(err)
    assert message in line and "s3cret" not in line
    assert rangeserver.requests == []
    assert not (tmp_path / "f.bin").exists()
