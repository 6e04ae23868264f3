"""Unit tests of segdl.core.options: size and header parsing, and Options validation."""

from __future__ import annotations

from typing import Any

import pytest

from segdl.core.http.transport import RequestsTransport
from segdl.core.options import (
    IF_EXISTS,
    MAX_CONNECTIONS,
    Options,
    options_from,
    parse_header,
    parse_size,
)
from segdl.core.plan import MIN_SPLIT_DEFAULT
from segdl.core.verify import Checksum
from segdl.errors import UsageError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# --- parse_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1", 1),
        ("1048576", MiB),
        ("512K", 512 * KiB),
        ("512k", 512 * KiB),
        ("1M", MiB),
        ("1m", MiB),
        ("1.5G", GiB + GiB // 2),
        ("1.5g", GiB + GiB // 2),
        ("2GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("2GB", 2 * GiB),
        ("4Mi", 4 * MiB),
        ("1T", 1 << 40),
        ("0.5K", 512),
        ("  8 M  ", 8 * MiB),
        ("100B", 100),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", " ", "M", "abc", "1X", "1MM", "1KiBB", "1 M B x", "1 2"),
        *("-1", "-1M", "+1M", "1.M", ".5M", "1,5M", "1e6", "0x10"),
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


# --- parse_header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc", ("Authorization", "Bearer abc")),
        ("X-Token:abc", ("X-Token", "abc")),
        ("  X-Pad  :   spaced value  ", ("X-Pad", "spaced value")),
        ("X-Empty:", ("X-Empty", "")),
        ("X-Colon: a:b:c", ("X-Colon", "a:b:c")),
        ("x!#$%&'*+.^_`|~0-9: token chars", ("x!#$%&'*+.^_`|~0-9", "token chars")),
        ("Cookie: a=1; b=2", ("Cookie", "a=1; b=2")),
        ("X-Tab: a\tb", ("X-Tab", "a\tb")),
    ],
)
def test_parse_header(text: str, expected: tuple[str, str]) -> None:
    assert parse_header(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("NoColon", id="missing-colon"),
        pytest.param("", id="empty"),
        pytest.param(": value", id="empty-name"),
        pytest.param("Bad Name: x", id="space-in-name"),
        pytest.param("Bad(Name): x", id="paren-in-name"),
        pytest.param("Bad/Name: x", id="slash-in-name"),
        pytest.param("Bad\u00e9: x", id="non-ascii-name"),
        pytest.param("X-A\nX-B: x", id="lf-in-name"),
        pytest.param("X-Evil: a\r\nInjected: 1", id="crlf-in-value"),
        pytest.param("X-Evil: a\nInjected: 1", id="lf-in-value"),
        pytest.param("X-Evil: a\rb", id="cr-in-value"),
        pytest.param("X-Evil: a\0b", id="nul-in-value"),
    ],
)
def test_parse_header_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_header(text)


# --- Options -------------------------------------------------------------------------------


def test_options_defaults_are_valid() -> None:
    options = Options()
    assert options.connections == 8
    assert options.min_split == MIN_SPLIT_DEFAULT
    assert options.if_exists == "error"


@pytest.mark.parametrize(
    "changes",
    [
        {"connections": 1},
        {"connections": MAX_CONNECTIONS},
        {"min_split": 1},
        {"buffer_size": 1024},
        {"connect_timeout": 0.001, "timeout": 0.001},
        {"retries": 0},
        {"max_redirects": 0},
        {"save_interval": 0.001},
        *({"if_exists": value} for value in IF_EXISTS),
    ],
)
def test_options_accepts_bounds(changes: dict[str, Any]) -> None:
    options = Options(**changes)
    for key, value in changes.items():
        assert getattr(options, key) == value


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"connections": 0}, "connections"),
        ({"connections": -1}, "connections"),
        ({"connections": MAX_CONNECTIONS + 1}, "connections"),
        ({"min_split": 0}, "min split"),
        ({"min_split": -5}, "min split"),
        ({"buffer_size": 1023}, "buffer"),
        ({"buffer_size": 0}, "buffer"),
        ({"connect_timeout": 0}, "timeout"),
        ({"connect_timeout": -1.0}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -0.5}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"if_exists": "clobber"}, "if_exists"),
        ({"if_exists": ""}, "if_exists"),
        ({"if_exists": "ERROR"}, "if_exists"),
        ({"max_redirects": -1}, "redirects"),
        ({"save_interval": 0}, "save interval"),
        ({"save_interval": -1.0}, "save interval"),
    ],
)
def test_options_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Options(**changes)


def test_options_is_frozen() -> None:
    options = Options()
    with pytest.raises(AttributeError):
        options.connections = 3  # type: ignore[misc]


def test_the_transport_reads_the_one_options_object() -> None:
    """No second copy of the HTTP defaults: the transport takes them from `Options`."""
    options = Options(headers=(("X-A", "1"),), timeout=7.0, max_redirects=3, trust_env=False)
    transport = RequestsTransport("http://example.com/", options)
    try:
        assert transport.options is options
        assert RequestsTransport("http://example.com/").options == Options()
    finally:
        transport.close()


def test_options_from_takes_a_public_functions_option_arguments() -> None:
    def public(
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 7.0,
        checksum: str | None = None,
        accept: str | None = None,
        verify: bool | str = True,
        listener: object = None,
    ) -> Options:
        return options_from(locals(), sync_each_file=False)

    digest = "sha256=" + "ab" * 32
    options = public("http://x/", headers={"X-A": "1"}, checksum=digest, accept="image/*")
    assert options == Options(
        headers=(("X-A", "1"),),
        timeout=7.0,
        checksum=Checksum.parse(digest),
        accept=("image/*",),
        sync_each_file=False,
    )
    with pytest.raises(UsageError, match="CA certificate file not found"):
        public("http://x/", verify="/nonexistent/ca.pem")
