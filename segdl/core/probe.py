"""Learn what the remote file is before planning: size, range support, validators and a name.

HEAD first; when HEAD is refused, fails or gives no length, a `GET` of `bytes=0-0` whose
Content-Range carries the total (and whose one-byte body is never read).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import (
    HTTPStatusError,
    NameResolutionError,
    NetworkError,
    ProxyError,
    RefusedError,
    TransferError,
)
from .http import ResponseBody, Transport
from .http.semantics import (
    Headers,
    Validators,
    content_coding,
    content_length,
    parse_content_range,
    status_error,
    strong_etag,
)


@dataclass(frozen=True)
class RemoteInfo:
    """What the probe learnt about the remote file."""

    url: str  # the URL the user gave
    final_url: str  # where redirects led: ranged requests go there
    size: int | None  # None when the server does not say (chunked)
    ranges: bool | None  # True: confirmed/advertised, False: refused, None: unknown
    validators: Validators
    content_disposition: str | None = None
    digest: str | None = None  # Repr-Digest / Content-Digest header, if any
    protocol: str = "HTTP/1.1"  # the HTTP version the answer came over

    @property
    def segmentable(self) -> bool:
        """Worth trying several connections: size known and ranges not refused."""
        return self.size is not None and self.ranges is not False


def _info(
    url: str,
    final_url: str,
    headers: Headers,
    size: int | None,
    ranges: bool | None,
    answer: object = None,
) -> RemoteInfo:
    """What an answer's headers say of the file, besides its size and range support."""
    # Only libcurl's answers (and bodies) say which HTTP version carried them.
    protocol = getattr(answer, "protocol", None) or "HTTP/1.1"
    return RemoteInfo(
        protocol=protocol,
        url=url,
        final_url=final_url,
        size=size,
        ranges=ranges,
        validators=Validators(
            etag=strong_etag(headers.get("ETag")), last_modified=headers.get("Last-Modified")
        ),
        content_disposition=headers.get("Content-Disposition"),
        digest=headers.get("Repr-Digest") or headers.get("Content-Digest"),
    )


def probe_remote(transport: Transport, url: str) -> RemoteInfo:
    """Probe `url`; raises a TransferError when neither HEAD nor a ranged GET gives an answer."""
    head_error: TransferError | None = None
    try:
        response, final = transport.request("HEAD", url)
        response.close()
    except (NameResolutionError, RefusedError, ProxyError):
        raise  # no request was sent (or the proxy refused it): a GET would meet the same
    except (NetworkError, HTTPStatusError) as exc:
        head_error = exc
    else:
        size = content_length(response)
        if response.status_code == 200 and size is not None and content_coding(response) is None:
            accept = response.headers.get("Accept-Ranges", "").strip().lower()
            ranges = True if accept == "bytes" else False if accept == "none" else None
            return _info(url, final, response.headers, size, ranges, response)
    try:
        return _probe_get(transport, url)
    except TransferError as exc:
        if head_error is not None and not isinstance(exc, HTTPStatusError):
            raise head_error from exc
        raise


def _probe_get(transport: Transport, url: str) -> RemoteInfo:
    response, final = transport.request("GET", url, {"Range": "bytes=0-0"})
    try:
        status = response.status_code
        headers = response.headers
        content_range = parse_content_range(headers.get("Content-Range"))
        if status == 206 and content_range is not None and content_range[0] == 0:
            size, ranges = content_range[2], True
        elif status == 416 and headers.get("Content-Range", "").strip() == "bytes */0":
            size, ranges = 0, True  # an empty file has no satisfiable range
        elif status == 200:
            size = None if content_coding(response) else content_length(response)
            ranges = False
        else:
            raise status_error(response)
        return _info(url, final, headers, size, ranges, response)
    finally:
        # Closing without reading drops the connection instead of downloading a whole file.
        response.close()


def info_from_first(url: str, final_url: str, body: ResponseBody) -> RemoteInfo:
    """What the checked answer to a batch item's first GET (`bytes=0-`) says of the file."""
    headers = body.headers
    if body.status == 206:
        content_range = parse_content_range(headers.get("Content-Range"))
        assert content_range is not None  # checked by transport.check_first_response
        size, ranges = content_range[2], True
    elif body.status == 416:
        size, ranges = 0, True
    else:
        size, ranges = body.length, False
    return _info(url, final_url, headers, size, ranges, body)
