"""HTTP semantics every transport shares: validators, the header parsers, and every check an
answer must pass before a byte of its body is used (RFC 9110). Pure functions of a `Response`:
no sockets, no library of a particular transport.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeAlias
from urllib.parse import urljoin, urlsplit

from ...errors import (
    ContentTypeError,
    HTTPStatusError,
    ProtocolViolation,
    RangeIgnoredError,
    RedirectError,
    RemoteChangedError,
)
from ..options import Options
from ..urls import origin

# Response headers: requests' case-insensitive dict, or http.client's message (both `.get`).
Headers: TypeAlias = "Mapping[str, str] | http.client.HTTPMessage"
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class Response(Protocol):
    """An answer whose headers are in and whose body is not read yet (a probe closes it
    unread; a transport wraps it in its `ResponseBody`)."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def url(self) -> str: ...  # the URL that answered, after redirects
    def close(self) -> None: ...


@dataclass(frozen=True)
class Validators:
    """What identifies one version of the remote file: a strong ETag and/or Last-Modified."""

    etag: str | None = None
    last_modified: str | None = None

    @property
    def empty(self) -> bool:
        return self.etag is None and self.last_modified is None

    def request_headers(self) -> dict[str, str]:
        """Conditional headers that make the server refuse to serve a different version."""
        if self.etag is not None:
            # If-Match fails with 412 on a changed file, which tells "changed" apart from
            # "ignores ranges" (If-Range would answer 200 in both cases).
            return {"If-Match": self.etag}
        if self.last_modified is not None:
            return {"If-Range": self.last_modified}
        return {}

    def mismatch(self, headers: Headers) -> str | None:
        """Describe how a response's validators differ from these, or None if they agree."""
        etag = headers.get("ETag")
        if self.etag is not None and etag is not None and etag != self.etag:
            return f"ETag changed from {self.etag} to {etag}"
        modified = headers.get("Last-Modified")
        if self.last_modified is not None and modified not in (None, self.last_modified):
            return f"Last-Modified changed from {self.last_modified} to {modified}"
        return None


def strong_etag(value: str | None) -> str | None:
    """The ETag if it is a well-formed strong one; weak ETags cannot guard byte ranges."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value
    return None


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def user_headers(options: Options, user_url: str, url: str) -> dict[str, str]:
    """The request headers every transport sends to `url`: the User-Agent; the user's own
    (`-H`) only on the origin of the URL the user gave unless `--location-trusted`;
    the cookies that belong there; and always `Accept-Encoding: identity` (a range of an
    encoded body would be a range of something else)."""
    headers = {"User-Agent": options.user_agent}
    if options.location_trusted or origin(url) == origin(user_url):
        for name, value in options.headers:
            if name.lower() == "user-agent":
                headers.pop("User-Agent", None)  # -H User-Agent: the user's own wins
            headers[name] = value
    cookie = options.cookies.header(url, user_url)
    if cookie is not None:
        given = next((k for k in headers if k.lower() == "cookie"), None)
        headers[given or "Cookie"] = f"{headers[given]}; {cookie}" if given else cookie
    headers["Accept-Encoding"] = "identity"
    return headers


def redirect_target(
    current: str, response: Response, seen: set[str], options: Options
) -> str | None:
    """Where a redirect answer to `current` leads, checked against segdl's redirect policy
    (http(s) only, no downgrade from https unless allowed, no loop); None when `response` is
    not a redirect. `seen` holds the URLs visited so far and gets the target."""
    location = response.headers.get("Location")
    if response.status_code not in REDIRECT_STATUSES or not location:
        return None
    target = urljoin(current, location)
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise RedirectError(f"refused redirect to {target}: not an http(s) URL")
    if (
        urlsplit(current).scheme.lower() == "https"
        and scheme == "http"
        and not options.allow_downgrade
    ):
        raise RedirectError(f"refused redirect from https to plain http: {target}")
    if target in seen:
        raise RedirectError(f"redirect loop at {target}")
    seen.add(target)
    return target


def too_many_redirects(url: str, options: Options) -> RedirectError:
    return RedirectError(f"more than {options.max_redirects} redirects from {url}")


def status_error(response: Response) -> HTTPStatusError:
    """`URL: 404 Not Found`, naming the URL that answered (after redirects)."""
    # The standard phrase where there is one: servers spell it in every case, or not at all.
    reason = http.client.responses.get(response.status_code) or response.reason or ""
    where = f"{response.url}: " if response.url else ""
    return HTTPStatusError(
        f"{where}{response.status_code} {reason}".rstrip(),
        status=response.status_code,
        retry_after=response.headers.get("Retry-After"),
    )


def content_coding(response: Response) -> str | None:
    """The body's content coding, or None when it is the identity (what we always ask for)."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    return None if encoding in ("", "identity") else encoding


def _check_identity(response: Response) -> None:
    encoding = content_coding(response)
    if encoding is not None:
        raise ProtocolViolation(
            f"server sent a {encoding}-encoded body although identity was requested"
        )


def content_length(response: Response) -> int | None:
    value = response.headers.get("Content-Length")
    value = None if value is None else value.strip()
    if not value or not (value.isascii() and value.isdigit()):
        return None  # absent, negative or garbage: unknown
    return int(value)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes a-b/total` as (a, b inclusive, total or None for `*`), or None when malformed."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value)
    if match is None:
        return None
    first, last, total = int(match[1]), int(match[2]), match[3]
    if last < first:
        return None
    return first, last, None if total == "*" else int(total)


def range_request(start: int, stop: int, total: int, validators: Validators) -> dict[str, str]:
    """The headers of a GET of `[start, stop)` of a `total`-byte file: the one place where a
    half-open range becomes HTTP's inclusive `bytes=a-b`."""
    if not 0 <= start < stop <= total:
        raise ValueError(f"bad range [{start}, {stop}) of {total}")
    return {"Range": f"bytes={start}-{stop - 1}", **validators.request_headers()}


def stream_request(offset: int, validators: Validators) -> dict[str, str]:
    """The headers of a GET of the whole file, or of its rest from `offset` on."""
    if not offset:
        return {}
    return {"Range": f"bytes={offset}-", **validators.request_headers()}


@contextmanager
def closed_on_error(response: Response) -> Iterator[None]:
    """Close `response` if the checks inside fail (its connection is not worth keeping)."""
    try:
        yield
    except BaseException:
        response.close()
        raise


def check_range_response(
    response: Response, start: int, stop: int, total: int, validators: Validators
) -> None:
    """Every check a ranged answer must pass before one byte of its body may be written."""
    status = response.status_code
    if status == 412:
        raise RemoteChangedError("the remote file changed (If-Match failed with 412)")
    if status == 200:
        changed = validators.mismatch(response.headers)
        if changed:
            raise RemoteChangedError(f"the remote file changed: {changed}")
        raise RangeIgnoredError("server ignored the Range header and sent the whole file")
    if status != 206:
        raise status_error(response)
    changed = validators.mismatch(response.headers)
    if changed:
        raise RemoteChangedError(f"the remote file changed: {changed}")
    _check_identity(response)
    content_range = parse_content_range(response.headers.get("Content-Range"))
    if content_range is None:
        raise ProtocolViolation(
            f"206 without a valid Content-Range: {response.headers.get('Content-Range')!r}"
        )
    first, last, size = content_range
    if size is None:
        raise ProtocolViolation("206 whose Content-Range does not give the total size (*)")
    if (first, last) != (start, stop - 1):
        raise ProtocolViolation(
            f"asked for bytes {start}-{stop - 1}, server sent Content-Range {first}-{last}"
        )
    if size != total:
        raise RemoteChangedError(f"remote size is now {size}, expected {total}")
    length = content_length(response)
    if length is not None and length != stop - start:
        raise ProtocolViolation(
            f"Content-Length {length} does not match range {start}-{stop - 1} "
            f"({stop - start} bytes)"
        )


def check_first_response(response: Response, accept: tuple[str, ...]) -> int | None:
    """Check the answer to `Range: bytes=0-`; returns the body length, None when unknown."""
    status = response.status_code
    if status == 416:
        unsatisfied = response.headers.get("Content-Range", "").strip()
        if unsatisfied != "bytes */0":
            raise ProtocolViolation(f"416 to a range from byte 0, with {unsatisfied!r}")
        return 0
    if status not in (200, 206):
        raise status_error(response)
    _check_identity(response)
    check_content_type(response, accept)
    length = content_length(response)
    if status == 200:
        return length
    content_range = parse_content_range(response.headers.get("Content-Range"))
    size = None if content_range is None else content_range[2]
    if content_range is None or size is None:
        raise ProtocolViolation(
            "206 without a valid Content-Range with the total size: "
            f"{response.headers.get('Content-Range')!r}"
        )
    first, last, _ = content_range
    if first != 0 or last != size - 1:
        raise ProtocolViolation(
            f"asked for the whole file from byte 0, server sent Content-Range {first}-{last}/{size}"
        )
    if length is not None and length != size:
        raise ProtocolViolation(f"Content-Length {length} does not match the {size} bytes sent")
    return size


def check_content_type(response: Response, accept: tuple[str, ...]) -> None:
    """Refuse an answer whose Content-Type matches none of `accept` (e.g. `image/*`)."""
    if not accept:
        return
    value = response.headers.get("Content-Type")
    media = (value or "").partition(";")[0].strip().lower()
    kind, _, sub = media.partition("/")
    for pattern in accept:
        p_kind, _, p_sub = pattern.partition("/")
        if p_kind in ("*", kind) and p_sub in ("*", sub) and kind and sub:
            return
    raise ContentTypeError(
        f"Content-Type {value or '(none)'} is not one of the accepted types {','.join(accept)}"
    )


def check_stream_response(response: Response, offset: int, validators: Validators) -> int | None:
    """Check a whole-file (or `offset`-onwards) answer; returns the body length if known."""
    status = response.status_code
    if status == 412:
        raise RemoteChangedError("the remote file changed (If-Match failed with 412)")
    if offset and status == 200:
        raise RangeIgnoredError(f"server cannot continue at byte {offset}; it sent the whole file")
    if status != (206 if offset else 200):
        raise status_error(response)
    changed = validators.mismatch(response.headers)
    if changed:
        raise RemoteChangedError(f"the remote file changed: {changed}")
    _check_identity(response)
    length = content_length(response)
    if offset:
        content_range = parse_content_range(response.headers.get("Content-Range"))
        if content_range is None or content_range[0] != offset:
            raise ProtocolViolation(
                f"asked to continue at byte {offset}, server sent Content-Range "
                f"{response.headers.get('Content-Range')!r}"
            )
        first, last, _ = content_range
        if length is not None and length != last - first + 1:
            raise ProtocolViolation("Content-Length does not match Content-Range")
        length = last - first + 1
    return length
