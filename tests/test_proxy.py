"""segdl.core.proxy without sockets: parsing proxy URLs, curl's --noproxy rules, the choice
between the explicit proxy and the environment, and messages without the password."""

from __future__ import annotations

import pytest

from segdl import UsageError
from segdl.core.options import Options, options_from
from segdl.core.proxy import (
    ProxyURL,
    bypasses,
    parse_noproxy,
    parse_proxy,
    proxy_for,
    without_password,
)

ENVIRONMENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://proxy:3128", ProxyURL("http", "proxy", 3128)),
        ("proxy:3128", ProxyURL("http", "proxy", 3128)),  # curl: no scheme is http
        ("HTTP://Proxy.Example", ProxyURL("http", "proxy.example", 1080)),
        ("https://proxy/", ProxyURL("https", "proxy", 443)),
        ("socks5://u:p@10.0.0.1:9050", ProxyURL("socks5", "10.0.0.1", 9050, "u", "p")),
        ("socks5h://[::1]:1080", ProxyURL("socks5h", "::1", 1080)),
        ("http://us%40er:p%3Ass@h:1", ProxyURL("http", "h", 1, "us@er", "p:ss")),
        ("http://user@h:1", ProxyURL("http", "h", 1, "user", None)),
    ],
)
def test_parse_proxy(text: str, expected: ProxyURL) -> None:
    assert parse_proxy(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ftp://u:hunter2@h:21", "unsupported proxy scheme 'ftp'"),
        ("socks4://u:hunter2@h", "unsupported proxy scheme 'socks4'"),
        ("http://u:hunter2@h:70000", "invalid proxy URL"),
        ("http://u:hunter2@h:port", "invalid proxy URL"),
        ("http://u:hunter2@h:0", "port 0"),
        ("http://u:hunter2@h:1/x", "no path"),
        ("http://u:hunter2@h:1?x=1", "no path"),
        ("http://u:hunter2@:1", "no host"),
    ],
)
def test_a_bad_proxy_is_a_usage_error_without_the_password(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        parse_proxy(text)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError, match=says):
        options_from({"proxy": text})


def test_the_password_is_never_rendered() -> None:
    proxy = parse_proxy("http://alice:hunter2@proxy:3128")
    assert str(proxy) == "http://alice@proxy:3128"
    assert "hunter2" not in repr(proxy)
    assert "hunter2" not in repr(Options(proxy=proxy))
    assert proxy.basic_auth() == "Basic YWxpY2U6aHVudGVyMg=="
    assert proxy.url() == "http://alice:hunter2@proxy:3128"
    assert str(parse_proxy("socks5h://[::1]:9")) == "socks5h://[::1]:9"
    assert without_password("http://a:b@h:1/x") == "http://a@h:1/x"
    assert without_password("a:b@h:1") == "a@h:1"
    assert without_password("http://h:1") == "http://h:1"
    assert without_password("http://a:b:c@d@h") == "http://a@h"


def test_parse_noproxy() -> None:
    assert parse_noproxy(None) == ()
    assert parse_noproxy("") == ()
    assert parse_noproxy(" Example.COM, .local ,10.0.0.0/8 host:8080 *") == (
        "example.com",
        "local",
        "10.0.0.0/8",
        "host:8080",
        "*",
    )
    assert parse_noproxy(["a", "[::1]:80"]) == ("a", "[::1]:80")
    for bad in ("host:99999", "host:x", "a/b", "user@host"):
        with pytest.raises(UsageError, match="--noproxy"):
            parse_noproxy(bad)


@pytest.mark.parametrize(
    ("entries", "host", "port", "expected"),
    [
        ("*", "anything", 80, True),
        ("example.com", "example.com", 80, True),
        ("example.com", "www.example.com", 443, True),
        (".example.com", "example.com", 80, True),  # a leading dot changes nothing (curl)
        ("example.com", "badexample.com", 80, False),
        ("example.com", "example.com.", 80, True),
        ("www.example.com", "example.com", 80, False),
        ("EXAMPLE.com", "Example.COM", 80, True),
        ("example.com:8080", "example.com", 8080, True),
        ("example.com:8080", "example.com", 80, False),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1", "127.0.0.2", 80, False),
        ("127.0.0.0/8", "127.9.9.9", 80, True),
        ("10.0.0.0/8", "127.0.0.1", 80, False),
        ("::1", "::1", 80, True),
        ("[::1]:8080", "[::1]", 8080, True),
        ("[::1]:8080", "::1", 80, False),
        ("fe80::/10", "fe80::1", 80, True),
        ("1", "127.0.0.1", 80, False),  # an address is matched as an address, not a name
        ("localhost", "127.0.0.1", 80, False),  # no name resolution
    ],
)
def test_bypasses_follows_curl(entries: str, host: str, port: int, expected: bool) -> None:
    assert bypasses(parse_noproxy(entries), host, port) is expected


def test_proxy_for_explicit_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = parse_proxy("socks5h://p:1080")
    monkeypatch.setenv("HTTP_PROXY", "http://env-http:3128")
    monkeypatch.setenv("HTTPS_PROXY", "env-https:3129")
    # The environment when nothing is given, by scheme.
    assert proxy_for("http://a.example/x", Options()) == parse_proxy("http://env-http:3128")
    assert proxy_for("https://a.example/x", Options()) == ProxyURL("http", "env-https", 3129)
    # The explicit proxy wins; --noproxy is its list and also keeps the environment's away.
    options = Options(proxy=explicit, noproxy=parse_noproxy("b.example"))
    assert proxy_for("http://a.example/x", options) == explicit
    assert proxy_for("http://x.b.example/x", options) is None
    # Not trusting the environment: only what was given.
    assert proxy_for("http://a.example/", Options(trust_env=False)) is None
    assert proxy_for("http://a.example/", Options(trust_env=False, proxy=explicit)) == explicit
    # NO_PROXY, curl's rules, with the port.
    monkeypatch.setenv("NO_PROXY", ".a.example,c.example:8080")
    assert proxy_for("http://www.a.example/", Options()) is None
    assert proxy_for("http://c.example:8080/", Options()) is None
    assert proxy_for("http://c.example/", Options()) is not None
    # ALL_PROXY for a scheme without its own.
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "socks5://all:1")
    assert proxy_for("https://z.example/", Options()) == ProxyURL("socks5", "all", 1)


def test_a_bad_proxy_in_the_environment_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "gopher://u:hunter2@h")
    # Refused when the options are made, before anything is fetched.
    with pytest.raises(UsageError, match="HTTPS_PROXY: unsupported proxy scheme") as caught:
        Options()
    assert "hunter2" not in str(caught.value)
    assert proxy_for("https://a.example/", Options(trust_env=False)) is None
    assert Options(proxy=parse_proxy("http://h:1")).proxy is not None  # the environment unused
    # NO_PROXY entries that are not hosts are left out, as curl does, not refused.
    monkeypatch.setenv("HTTPS_PROXY", "h:1")
    monkeypatch.setenv("NO_PROXY", "a.example:http,http://b.example,c.example")
    assert proxy_for("https://a.example/", Options()) is not None
    assert proxy_for("https://c.example/", Options()) is None


def test_options_take_text() -> None:
    options = options_from({"proxy": "http://h:1", "noproxy": "a, b"})
    assert options.proxy == ProxyURL("http", "h", 1)
    assert options.noproxy == ("a", "b")
    assert Options(proxy="", noproxy=None).proxy is None  # type: ignore[arg-type]
    assert options_from({"noproxy": ["x.example"]}).noproxy == ("x.example",)
    with pytest.raises(UsageError):
        Options(proxy=42)  # type: ignore[arg-type]
