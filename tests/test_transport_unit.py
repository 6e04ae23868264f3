"""Unit tests of the pure parts of segdl.core.http: the shared answer checks (`semantics`) and
the requests transport's error translation (fake `requests.Response`s)."""

from __future__ import annotations

import http.client
import ssl

import pytest
import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from segdl.core.http.semantics import (
    Validators,
    check_range_response,
    check_stream_response,
    content_length,
    parse_content_range,
    strong_etag,
)
from segdl.core.http.transport import translate, translated
from segdl.core.urls import check_url, origin
from segdl.errors import (
    ConnectError,
    HTTPStatusError,
    InvalidURLError,
    NetworkError,
    ProtocolViolation,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    TimeoutError_,
    TLSError,
    TruncatedError,
)

ETAG = '"v1"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
TOTAL = 1000


def fake_response(status: int, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.models.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    return response


def partial(start: int, stop: int, total: int | str = TOTAL, **extra: str) -> requests.Response:
    """A 206 for `[start, stop)` with matching Content-Range and Content-Length."""
    headers = {
        "Content-Range": f"bytes {start}-{stop - 1}/{total}",
        "Content-Length": str(stop - start),
        "ETag": ETAG,
    }
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return fake_response(206, headers)


VALIDATORS = Validators(etag=ETAG)

# --- check_url -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/file.bin",
        "HTTPS://EXAMPLE.COM/x",
        "http://example.com:8080/a?b=c#d",
        "http://127.0.0.1:1/",
        "http://[::1]:8080/x",
        "https://user:pass@example.com/x",
    ],
)
def test_check_url_accepts(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://example.com/file", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("example.com/file", id="no-scheme"),
        pytest.param("", id="empty"),
        pytest.param("http://", id="no-host"),
        pytest.param("http:///path", id="empty-host"),
        pytest.param("http://:8080/x", id="port-only"),
        pytest.param("https://example.com:99999/", id="port-out-of-range"),
        pytest.param("https://example.com:abc/", id="port-not-a-number"),
        pytest.param("http://[::1/", id="bad-ipv6"),
        pytest.param("javascript:alert(1)", id="javascript"),
    ],
)
def test_check_url_rejects(url: str) -> None:
    with pytest.raises(InvalidURLError):
        check_url(url)


# --- origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/x", ("http", "example.com", 80)),
        ("https://example.com/x", ("https", "example.com", 443)),
        ("HTTPS://Example.COM/x", ("https", "example.com", 443)),
        ("http://example.com:8080/", ("http", "example.com", 8080)),
        ("https://user:pw@example.com:8443/", ("https", "example.com", 8443)),
    ],
)
def test_origin(url: str, expected: tuple[str, str, int]) -> None:
    assert origin(url) == expected


def test_origin_default_port_equals_explicit() -> None:
    assert origin("http://example.com/") == origin("http://EXAMPLE.com:80/other")
    assert origin("https://example.com/") == origin("https://example.com:443/")
    assert origin("http://example.com/") != origin("https://example.com/")
    assert origin("http://example.com/") != origin("http://example.com:8080/")


# --- strong_etag / Validators ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', '"abc"'),
        ('  "abc"  ', '"abc"'),
        ('""', '""'),
        ('W/"abc"', None),
        ('w/"abc"', None),
        ("abc", None),
        ('"abc', None),
        ('abc"', None),
        ('"', None),
        ("", None),
        (None, None),
    ],
)
def test_strong_etag(value: str | None, expected: str | None) -> None:
    assert strong_etag(value) == expected


def test_request_headers_prefers_if_match() -> None:
    assert Validators(ETAG, LAST_MODIFIED).request_headers() == {"If-Match": ETAG}
    assert Validators(etag=ETAG).request_headers() == {"If-Match": ETAG}


def test_request_headers_last_modified_only() -> None:
    assert Validators(last_modified=LAST_MODIFIED).request_headers() == {"If-Range": LAST_MODIFIED}


def test_request_headers_none() -> None:
    assert Validators().request_headers() == {}
    assert Validators().empty
    assert not Validators(etag=ETAG).empty
    assert not Validators(last_modified=LAST_MODIFIED).empty


def test_mismatch() -> None:
    both = Validators(ETAG, LAST_MODIFIED)
    assert both.mismatch({}) is None
    assert both.mismatch({"ETag": ETAG, "Last-Modified": LAST_MODIFIED}) is None
    assert both.mismatch(CaseInsensitiveDict({"etag": ETAG})) is None
    assert "ETag" in (both.mismatch({"ETag": '"v2"'}) or "")
    later = "Thu, 22 Oct 2015 07:28:00 GMT"
    assert "Last-Modified" in (both.mismatch({"Last-Modified": later}) or "")
    # Without a validator of our own, the server's cannot disagree.
    assert Validators().mismatch({"ETag": '"v2"', "Last-Modified": later}) is None
    assert Validators(etag=ETAG).mismatch({"Last-Modified": later}) is None
    assert Validators(last_modified=LAST_MODIFIED).mismatch({"ETag": '"v2"'}) is None


# --- parse_content_range / content_length ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1000", (0, 99, 1000)),
        ("bytes 500-999/1000", (500, 999, 1000)),
        ("bytes 7-7/8", (7, 7, 8)),
        ("bytes 0-99/*", (0, 99, None)),
        ("BYTES 0-99/1000", (0, 99, 1000)),
        ("  bytes   0-99/1000  ", (0, 99, 1000)),
    ],
)
def test_parse_content_range(value: str, expected: tuple[int, int, int | None]) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes */1000",
        "bytes 0-99",
        "bytes 0-/1000",
        "bytes -99/1000",
        "bytes 99-0/1000",
        "bytes 0-99/",
        "bytes 0-99/abc",
        "bytes=0-99/1000",
        "items 0-99/1000",
        "0-99/1000",
        "bytes 0-99/1000, 200-299/1000",
        "bytes -1-99/1000",
    ],
)
def test_parse_content_range_malformed(value: str | None) -> None:
    assert parse_content_range(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("10", 10), (" 10 ", 10), ("0", 0), ("-1", None), ("abc", None), ("", None)],
)
def test_content_length(value: str | None, expected: int | None) -> None:
    headers = {} if value is None else {"Content-Length": value}
    assert content_length(fake_response(200, headers)) == expected


def test_content_length_superscript_digit_is_unknown() -> None:
    assert content_length(fake_response(200, {"Content-Length": "\u00b2"})) is None


# --- check_range_response ------------------------------------------------------------------------


def test_range_exact_206_ok() -> None:
    check_range_response(partial(100, 200), 100, 200, TOTAL, VALIDATORS)
    check_range_response(partial(0, TOTAL), 0, TOTAL, TOTAL, VALIDATORS)
    check_range_response(partial(999, 1000), 999, 1000, TOTAL, Validators())


def test_range_206_without_content_length_ok() -> None:
    response = fake_response(206, {"Content-Range": "bytes 100-199/1000"})
    check_range_response(response, 100, 200, TOTAL, VALIDATORS)


def test_range_206_identity_encoding_ok() -> None:
    check_range_response(partial(0, 10, Content_Encoding="identity"), 0, 10, TOTAL, VALIDATORS)


def test_range_200_is_range_ignored() -> None:
    response = fake_response(200, {"Content-Length": str(TOTAL), "ETag": ETAG})
    with pytest.raises(RangeIgnoredError):
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)


def test_range_200_with_other_etag_is_remote_changed() -> None:
    response = fake_response(200, {"Content-Length": str(TOTAL), "ETag": '"v2"'})
    with pytest.raises(RemoteChangedError):
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)


def test_range_200_with_other_last_modified_is_remote_changed() -> None:
    response = fake_response(200, {"Last-Modified": "Thu, 22 Oct 2015 07:28:00 GMT"})
    with pytest.raises(RemoteChangedError):
        check_range_response(response, 0, 10, TOTAL, Validators(last_modified=LAST_MODIFIED))


def test_range_412_is_remote_changed() -> None:
    with pytest.raises(RemoteChangedError):
        check_range_response(fake_response(412), 100, 200, TOTAL, VALIDATORS)


def test_range_206_with_other_etag_is_remote_changed() -> None:
    with pytest.raises(RemoteChangedError):
        check_range_response(partial(100, 200, ETag='"v2"'), 100, 200, TOTAL, VALIDATORS)


@pytest.mark.parametrize(
    "content_range",
    [
        pytest.param("bytes 101-199/1000", id="wrong-start"),
        pytest.param("bytes 99-199/1000", id="early-start"),
        pytest.param("bytes 100-198/1000", id="short-end"),
        pytest.param("bytes 100-200/1000", id="long-end"),
        pytest.param("bytes 0-999/1000", id="whole-file"),
    ],
)
def test_range_wrong_bounds_is_protocol_violation(content_range: str) -> None:
    response = fake_response(206, {"Content-Range": content_range, "ETag": ETAG})
    with pytest.raises(ProtocolViolation) as info:
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)
    assert not isinstance(info.value, RangeIgnoredError)


@pytest.mark.parametrize(
    "content_range",
    [None, "", "bytes 100-199", "bytes 199-100/1000", "garbage"],
)
def test_range_missing_or_malformed_content_range(content_range: str | None) -> None:
    headers = {"ETag": ETAG, "Content-Length": "100"}
    if content_range is not None:
        headers["Content-Range"] = content_range
    with pytest.raises(ProtocolViolation):
        check_range_response(fake_response(206, headers), 100, 200, TOTAL, VALIDATORS)


@pytest.mark.parametrize("total", [999, 1001, 200])
def test_range_other_total_is_remote_changed(total: int | str) -> None:
    with pytest.raises(RemoteChangedError):
        check_range_response(partial(100, 200, total=total), 100, 200, TOTAL, VALIDATORS)


def test_range_unknown_total_is_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="total"):
        check_range_response(partial(100, 200, total="*"), 100, 200, TOTAL, VALIDATORS)


@pytest.mark.parametrize("length", ["99", "101", "0", "1000"])
def test_range_content_length_mismatch_is_protocol_violation(length: str) -> None:
    response = partial(100, 200, Content_Length=length)
    with pytest.raises(ProtocolViolation):
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "br", "deflate", " gzip "])
def test_range_encoded_body_is_protocol_violation(encoding: str) -> None:
    response = partial(100, 200, Content_Encoding=encoding)
    with pytest.raises(ProtocolViolation):
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)


def test_range_503_is_status_error_with_retry_after() -> None:
    response = fake_response(503, {"Retry-After": "7"})
    with pytest.raises(HTTPStatusError) as info:
        check_range_response(response, 100, 200, TOTAL, VALIDATORS)
    assert info.value.status == 503
    assert info.value.retry_after == "7"
    assert "503" in str(info.value)


@pytest.mark.parametrize("status", [404, 416, 429, 500, 302])
def test_range_other_status_is_status_error(status: int) -> None:
    with pytest.raises(HTTPStatusError) as info:
        check_range_response(fake_response(status), 100, 200, TOTAL, VALIDATORS)
    assert info.value.status == status
    assert info.value.retry_after is None


# --- check_stream_response -----------------------------------------------------------------------


def test_stream_200_from_zero() -> None:
    response = fake_response(200, {"Content-Length": "1000", "ETag": ETAG})
    assert check_stream_response(response, 0, VALIDATORS) == 1000


def test_stream_200_unknown_length() -> None:
    assert check_stream_response(fake_response(200), 0, Validators()) is None


def test_stream_206_from_zero_is_status_error() -> None:
    with pytest.raises(HTTPStatusError):
        check_stream_response(partial(0, TOTAL), 0, VALIDATORS)


def test_stream_resume_206_ok() -> None:
    response = partial(300, TOTAL)
    assert check_stream_response(response, 300, VALIDATORS) == TOTAL - 300


def test_stream_resume_206_unknown_total_ok() -> None:
    response = fake_response(206, {"Content-Range": "bytes 300-999/*"})
    assert check_stream_response(response, 300, VALIDATORS) == 700


def test_stream_resume_200_is_range_ignored() -> None:
    with pytest.raises(RangeIgnoredError):
        check_stream_response(fake_response(200, {"ETag": ETAG}), 300, VALIDATORS)


def test_stream_412_is_remote_changed() -> None:
    with pytest.raises(RemoteChangedError):
        check_stream_response(fake_response(412), 300, VALIDATORS)


def test_stream_changed_etag_is_remote_changed() -> None:
    with pytest.raises(RemoteChangedError):
        check_stream_response(partial(300, TOTAL, ETag='"v2"'), 300, VALIDATORS)
    with pytest.raises(RemoteChangedError):
        check_stream_response(fake_response(200, {"ETag": '"v2"'}), 0, VALIDATORS)


@pytest.mark.parametrize(
    "content_range", [None, "bytes 0-999/1000", "bytes 301-999/1000", "nonsense"]
)
def test_stream_resume_wrong_start_is_protocol_violation(content_range: str | None) -> None:
    headers = {} if content_range is None else {"Content-Range": content_range}
    with pytest.raises(ProtocolViolation):
        check_stream_response(fake_response(206, headers), 300, VALIDATORS)


def test_stream_resume_content_length_mismatch() -> None:
    with pytest.raises(ProtocolViolation):
        check_stream_response(partial(300, TOTAL, Content_Length="10"), 300, VALIDATORS)


def test_stream_encoded_body_is_protocol_violation() -> None:
    response = fake_response(200, {"Content-Encoding": "gzip"})
    with pytest.raises(ProtocolViolation):
        check_stream_response(response, 0, Validators())


def test_stream_503_is_status_error() -> None:
    response = fake_response(503, {"Retry-After": "120"})
    with pytest.raises(HTTPStatusError) as info:
        check_stream_response(response, 0, VALIDATORS)
    assert (info.value.status, info.value.retry_after) == (503, "120")


# --- translate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.SSLError("certificate verify failed"), TLSError),
        (ssl.SSLError(1, "bad handshake"), TLSError),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), TLSError),
        (requests.exceptions.ConnectTimeout("connect timed out"), TimeoutError_),
        (requests.exceptions.ReadTimeout("read timed out"), TimeoutError_),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), TimeoutError_),
        (TimeoutError("timed out"), TimeoutError_),
        (TimeoutError("timed out"), TimeoutError_),
        (requests.exceptions.ChunkedEncodingError("broken chunk"), TruncatedError),
        (http.client.IncompleteRead(b"abc", 10), TruncatedError),
        (urllib3.exceptions.ProtocolError("Connection broken"), TruncatedError),
        (http.client.RemoteDisconnected("closed"), TruncatedError),
        (requests.exceptions.ConnectionError("refused"), ConnectError),
        (ConnectionResetError(104, "Connection reset by peer"), ConnectError),
        (ConnectionRefusedError(111, "Connection refused"), ConnectError),
        (BrokenPipeError(32, "Broken pipe"), ConnectError),
        (requests.exceptions.InvalidURL("bad"), InvalidURLError),
        (requests.exceptions.MissingSchema("no scheme"), InvalidURLError),
        (requests.exceptions.InvalidSchema("bad scheme"), InvalidURLError),
        (requests.exceptions.RequestException("other"), NetworkError),
        (OSError(5, "Input/output error"), NetworkError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_translate(exc: BaseException, expected: type[SegdlError]) -> None:
    translated_exc = translate(exc)
    assert type(translated_exc) is expected
    assert str(translated_exc)


def test_translate_passes_segdl_errors_through() -> None:
    error = TruncatedError("short")
    assert translate(error) is error


def test_translate_rejects_foreign_exceptions() -> None:
    with pytest.raises(TypeError):
        translate(ValueError("not transport"))


def test_translate_uses_innermost_reason() -> None:
    inner = ConnectionRefusedError(111, "Connection refused")
    outer = requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("wrap", inner))
    message = str(translate(outer))
    assert "wrap" in message or "Connection refused" in message
    assert "\n" not in message


def test_translate_message_is_one_short_line() -> None:
    message = str(translate(requests.exceptions.ConnectionError("line one\nline two" + "x" * 500)))
    assert "\n" not in message
    assert "line two" not in message


def test_translated_context_manager() -> None:
    with pytest.raises(TimeoutError_) as info, translated():
        raise requests.exceptions.ReadTimeout("slow")
    assert isinstance(info.value.__cause__, requests.exceptions.ReadTimeout)
    with pytest.raises(TruncatedError), translated():
        raise TruncatedError("already ours")
    with pytest.raises(ValueError), translated():
        raise ValueError("not a transport error: left alone")


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.SSLError("decryption failed or bad record mac"),
        urllib3.exceptions.HTTPError("generic urllib3 failure"),
    ],
    ids=["SSLError", "HTTPError"],
)
def test_translated_maps_every_urllib3_error(exc: Exception) -> None:
    with pytest.raises(SegdlError), translated():
        raise exc
