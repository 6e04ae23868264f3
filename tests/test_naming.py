from __future__ import annotations

import pytest

from segdl.core.naming import (
    derive_filename,
    filename_from_url,
    parse_content_disposition,
    sanitize_filename,
)

# --- parse_content_disposition ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # RFC 6266 section 5 examples.
        ("Attachment; filename=example.html", "example.html"),
        ('INLINE; FILENAME= "an example.html"', "an example.html"),
        ("attachment; filename*= UTF-8''%e2%82%ac%20rates", "\u20ac rates"),
        (
            "attachment; filename=\"EURO rates.txt\"; filename*=utf-8''%e2%82%ac%20rates.txt",
            "\u20ac rates.txt",
        ),
        # filename* wins wherever it appears.
        (
            "attachment; filename*=utf-8''%e2%82%ac%20rates.txt; filename=\"EURO rates.txt\"",
            "\u20ac rates.txt",
        ),
        # ISO-8859-1 and its aliases; the language tag is ignored.
        ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "\u00a3 rates.txt"),
        ("attachment; filename*=ISO-8859-1''caf%E9.txt", "caf\u00e9.txt"),
        ("attachment; filename*=latin1''caf%E9.txt", "caf\u00e9.txt"),
        ("attachment; filename*=UTF8''caf%C3%A9.txt", "caf\u00e9.txt"),
        # Broken servers quote the ext-value; still readable.
        ("attachment; filename*=\"UTF-8''a%20b.txt\"", "a b.txt"),
        # Quoted strings: backslash escapes, ";" inside quotes.
        (r'attachment; filename="a\"b.txt"', 'a"b.txt'),
        (r'attachment; filename="x\\y.txt"', "x\\y.txt"),
        ('attachment; filename="a;b.txt"; size=3', "a;b.txt"),
        # Unquoted values with spaces run to the next ";", as in browsers.
        ("attachment; filename=foo bar.txt; size=3", "foo bar.txt"),
        ("attachment;filename=  spaced.txt  ", "spaced.txt"),
        ('  attachment  ;  filename  =  "ws.txt"  ;  ', "ws.txt"),
        ("inline; filename=x.pdf", "x.pdf"),
        # No disposition type at all.
        ("filename=bare.txt", "bare.txt"),
        # Other parameters, including ones whose quoted value looks like a filename param.
        ('attachment; foo="x;filename=evil.txt"; filename=good.txt', "good.txt"),
        ("attachment; size=10; creation-date=x; filename=late.txt", "late.txt"),
        # First occurrence wins.
        ("attachment; filename=first.txt; filename=second.txt", "first.txt"),
        # Unterminated quoted string runs to the end.
        ('attachment; filename="unterminated.txt', "unterminated.txt"),
        # Raw UTF-8 read as ISO-8859-1 by http.client is repaired.
        ('attachment; filename="\u00e2\u0082\u00ac.txt"', "\u20ac.txt"),
        # Genuine ISO-8859-1 that is not valid UTF-8 is left alone.
        ('attachment; filename="caf\u00e9.txt"', "caf\u00e9.txt"),
    ],
)
def test_parse_content_disposition(header: str, expected: str) -> None:
    assert parse_content_disposition(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Invalid ext-values fall back to filename.
        ("attachment; filename*=utf-8''%FF%FE.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=utf-8''%zz.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=utf-8''trailing%; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=no-such-charset''a.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=unicode_escape''%5Cx41.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=utf-8'missing-quote.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=a.txt; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=utf-8''; filename=fallback.txt", "fallback.txt"),
        ("attachment; filename*=utf-8''caf\u00e9.txt; filename=fallback.txt", "fallback.txt"),
    ],
)
def test_invalid_extended_value_falls_back_to_filename(header: str, expected: str) -> None:
    assert parse_content_disposition(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "attachment",
        "inline",
        "attachment;",
        ";;;=;",
        "=",
        "attachment; filename=",
        'attachment; filename=""',
        'attachment; filename="',
        "attachment; name=x.txt",
        "attachment filename=x.txt",
        "attachment; filename*=utf-8''%FF",
        "\x00\x01garbage\xff",
    ],
)
def test_no_usable_name(header: str) -> None:
    assert parse_content_disposition(header) is None


def test_returns_raw_unsanitized_name() -> None:
    assert parse_content_disposition('attachment; filename="../../etc/passwd"') == (
        "../../etc/passwd"
    )


# --- filename_from_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/files/archive.tar.gz", "archive.tar.gz"),
        ("https://example.com/files/a.iso?token=abc/def.exe#frag/x.bin", "a.iso"),
        ("https://example.com/files/a.iso#frag", "a.iso"),
        ("https://example.com/files/%E2%82%AC%20rates.txt", "\u20ac rates.txt"),
        ("https://example.com/files/bad%FFbyte.txt", "bad\ufffdbyte.txt"),
        ("https://example.com/a/..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("https://example.com/just-a-name", "just-a-name"),
    ],
)
def test_filename_from_url(url: str, expected: str) -> None:
    assert filename_from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com/",
        "https://example.com/dir/",
        "https://example.com/dir/?q=name.txt",
        "https://example.com/#name.txt",
    ],
)
def test_filename_from_url_empty(url: str) -> None:
    assert filename_from_url(url) is None


# --- sanitize_filename ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("  spaced name.txt  ", "spaced name.txt"),
        ("caf\u00e9 \u20ac.txt", "caf\u00e9 \u20ac.txt"),
        # Traversal with either separator keeps only the last component.
        ("../../etc/passwd", "passwd"),
        ("..\\..\\x", "x"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\evil.dll", "evil.dll"),
        ("a/b\\c/d.txt", "d.txt"),
        # Control characters: NUL, C0, DEL, C1, plus bidi overrides and line separators.
        ("evil\x00.txt", "evil.txt"),
        ("a\tb\nc\rd.txt", "abcd.txt"),
        ("del\x7f.txt", "del.txt"),
        ("c1\x85\x9b.txt", "c1.txt"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("line\u2028break.txt", "linebreak.txt"),
        ("lone\ud800surrogate.txt", "lonesurrogate.txt"),
        # Control characters cannot hide a separator or a dot-name.
        ("..\x00/x.txt", "x.txt"),
        ("\x01 name.txt \x02", "name.txt"),
        # Dots inside or at the end of a name are fine.
        ("a..b", "a..b"),
        ("name.", "name."),
    ],
)
def test_sanitize(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "   ",
        ".",
        "..",
        "...",
        ".bashrc",
        "  .hidden  ",
        "\x00",
        "\x00.",
        "a/..",
        "a\\.",
        "evil/",
        "evil\\",
        "../../.ssh",
        "\u202e",
    ],
)
def test_sanitize_refuses(name: str | None) -> None:
    assert sanitize_filename(name) == "download"
    assert sanitize_filename(name, fallback="other.bin") == "other.bin"


@pytest.mark.parametrize("fallback", ["", ".", "..", ".hidden", "a/b", "a\\b", "x\x00", "x" * 256])
def test_unsafe_fallback_is_rejected(fallback: str) -> None:
    with pytest.raises(ValueError, match="fallback"):
        sanitize_filename(None, fallback=fallback)


def _utf8_len(name: str) -> int:
    return len(name.encode("utf-8"))


def test_cap_keeps_exactly_255_bytes() -> None:
    name = "a" * 251 + ".txt"
    assert sanitize_filename(name) == name
    assert sanitize_filename("a" + name) == name


def test_cap_keeps_double_extension_with_multibyte_stem() -> None:
    name = "\u20ac" * 200 + ".tar.gz"  # 600 bytes of stem
    result = sanitize_filename(name)
    assert result.endswith(".tar.gz")
    assert _utf8_len(result) <= 255
    # The cut lands on a character boundary: 248 bytes of budget hold 82 three-byte chars.
    assert result == "\u20ac" * 82 + ".tar.gz"


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_cap_never_splits_a_character(width: int) -> None:
    char = {1: "a", 2: "\u00e9", 3: "\u20ac", 4: "\U0001f600"}[width]
    for extra in range(width):
        name = "x" * extra + char * 300 + ".zip"
        result = sanitize_filename(name)
        assert result.endswith(".zip")
        assert _utf8_len(result) <= 255
        assert _utf8_len(result) > 255 - width
        result.encode("utf-8")  # valid, i.e. no lone surrogate or broken character


def test_cap_keeps_last_suffix_when_inner_one_is_long() -> None:
    # ".backup" is too long to be a file type, so only ".gz" is protected from the cut.
    assert sanitize_filename("n" * 300 + ".backup.gz") == "n" * 252 + ".gz"


def test_cap_without_extension() -> None:
    assert sanitize_filename("\u00e9" * 200) == "\u00e9" * 127


def test_cap_treats_long_suffix_as_part_of_the_name() -> None:
    result = sanitize_filename("a." + "b" * 300)
    assert result == "a." + "b" * 253


def test_sanitized_names_never_contain_separators_or_nul() -> None:
    nasty = [
        "../x",
        "..\\x",
        "a\x00/b",
        "/",
        "\\",
        "x/\x00",
        "%2F",
        "a" * 300 + "/b",
        "\\" * 300,
    ]
    for name in nasty:
        result = sanitize_filename(name)
        assert "/" not in result
        assert "\\" not in result
        assert "\x00" not in result
        assert not result.startswith(".")
        assert 0 < _utf8_len(result) <= 255


# --- derive_filename -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "header", "expected"),
    [
        ("https://h/x/from-url.bin", "attachment; filename=from-header.bin", "from-header.bin"),
        ("https://h/x/from-url.bin", None, "from-url.bin"),
        ("https://h/x/from-url.bin", "attachment", "from-url.bin"),
        ("https://h/x/from-url.bin", "garbage;;;", "from-url.bin"),
        ("https://h/x/from-url.bin?q=1#f", "", "from-url.bin"),
        ("https://h/x/", None, "download"),
        ("https://h", "inline", "download"),
        # A header name that sanitizes to nothing gives way to the URL.
        ("https://h/x/from-url.bin", 'attachment; filename=".."', "from-url.bin"),
        ("https://h/x/from-url.bin", "attachment; filename=.htaccess", "from-url.bin"),
        # A legitimate name equal to the fallback is still taken from the header.
        ("https://h/x/from-url.bin", "attachment; filename=download", "download"),
        # Traversal in the header, both forms.
        ("https://h/x/", 'attachment; filename="../../etc/passwd"', "passwd"),
        ("https://h/x/", 'attachment; filename="..\\\\..\\\\x"', "x"),
        ("https://h/x/", "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://h/x/", "attachment; filename*=UTF-8''..%5C..%5Cboot.ini", "boot.ini"),
        ("https://h/x/", "attachment; filename*=UTF-8''evil%00.txt", "evil.txt"),
        ("https://h/x/", "attachment; filename*=UTF-8''..%2F..", "download"),
        # Traversal in the URL.
        ("https://h/a/..%2F..%2Fetc%2Fpasswd", None, "passwd"),
        ("https://h/a/..%5C..%5Cwin.ini", None, "win.ini"),
        ("https://h/a/evil%00.txt", None, "evil.txt"),
        ("https://h/a/%2E%2E", None, "download"),
        ("https://h/a/..%2F", None, "download"),
        ("https://h/a/.env", None, "download"),
    ],
)
def test_derive_filename(url: str, header: str | None, expected: str) -> None:
    assert derive_filename(url, header) == expected


def test_derive_filename_custom_fallback() -> None:
    assert derive_filename("https://h/", None, fallback="index.html") == "index.html"


def test_derive_filename_caps_length() -> None:
    header = "attachment; filename*=UTF-8''" + "%E2%82%AC" * 200 + ".tar.gz"
    result = derive_filename("https://h/x", header)
    assert result.endswith(".tar.gz")
    assert len(result.encode("utf-8")) <= 255
