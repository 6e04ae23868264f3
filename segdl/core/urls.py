"""What segdl needs to know of a URL before any request: whether it can be fetched at all
(`check_url`), and its `Origin`, the one (scheme, host, port) key used everywhere a host is
meant: a per-host cap, a reusable connection, where credentials may be sent."""

from __future__ import annotations

import functools
from typing import NamedTuple
from urllib.parse import urlsplit

from ..errors import InvalidURLError


class Origin(NamedTuple):
    """(scheme, host, port), lower case, with the scheme's default port filled in."""

    scheme: str
    host: str
    port: int


# The host of a job whose host is not known yet (no URL answered).
NO_ORIGIN = Origin("", "", 0)


@functools.lru_cache(maxsize=1024)
def origin(url: str) -> Origin:
    """The origin of `url`: what a per-host cap counts, what a kept-alive connection can be
    reused for, and what decides whether user headers (credentials) may be sent to it.
    (Cached: each item of a batch asks for its URL's origin several times.)"""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return Origin(scheme, (parts.hostname or "").lower(), port)


def check_url(url: str) -> str:
    """Return `url` if it is an absolute http(s) URL with a host, else raise InvalidURLError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidURLError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURLError(
            f"unsupported URL scheme {parts.scheme or '(none)'!r} in {url!r}{_did_you_mean(url)}"
        )
    if not parts.hostname:
        raise InvalidURLError(f"URL has no host: {url!r}")
    return url


def _did_you_mean(url: str) -> str:
    """A hint for a URL written without its scheme (``host:port/path``), else ""."""
    if "://" in url or not ("/" in url or ":" in url):
        return ""
    guess = "http://" + url
    try:
        parts = urlsplit(guess)
        parts.port  # noqa: B018 - raises ValueError on a bad port ("mailto:x")
    except ValueError:
        return ""
    host = parts.hostname or ""
    # A dotted name, an address or localhost: not a word before a colon ("c:/x", "urn:x").
    if "." not in host and ":" not in host and host != "localhost":
        return ""
    return f"; did you mean {guess}?"
