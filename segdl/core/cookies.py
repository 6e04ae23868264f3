"""The user's cookies (`-b 'name=value; ...'`, `--load-cookies FILE`) and the one rule that
decides which of them a request carries: `Cookies.header(url, user_url)`. Every transport
calls it where it builds a request's headers, for each request and each redirect hop.

segdl has no cookie engine: it sends only the cookies it was given, never stores what a server
sets. A cookie of a Netscape cookie file (the `cookies.txt` that curl, wget and aria2c read)
goes where a browser would send it: to its domain (and its subdomains when the file says so),
under its path, over https only when secure, until it expires. A cookie given as a string has
no domain: like curl's `-b 'name=value'` without a cookie engine, it goes to the origin of the
URL the user gave (scheme, host and port), never to another one after a redirect.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import os
import re
import time
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError
from .urls import origin

_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x1f\x7f;]")


@dataclass(frozen=True)
class Cookie:
    """One cookie. `domain` None: the origin of the user's URL only (a `-b` string's)."""

    name: str
    value: str
    domain: str | None = None  # lower case, without a leading dot
    subdomains: bool = False  # the domain's subdomains too (a leading dot in the file)
    path: str = "/"
    secure: bool = False


@dataclass(frozen=True, repr=False)
class Cookies:
    """An immutable set of cookies; `header` picks those a request carries."""

    cookies: tuple[Cookie, ...] = ()

    def __repr__(self) -> str:
        # Values are secrets: an options object printed in a log must not show them.
        return f"Cookies({len(self.cookies)} cookies)"

    def __bool__(self) -> bool:
        return bool(self.cookies)

    def __add__(self, other: Cookies) -> Cookies:
        return Cookies(self.cookies + other.cookies)

    def header(self, url: str, user_url: str) -> str | None:
        """The `Cookie` header for a request to `url` (None: no cookie goes there), in a
        transfer that started from `user_url`, the URL the user gave."""
        if not self.cookies:
            return None
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        https = parts.scheme.lower() == "https"
        path = parts.path or "/"
        same_origin: bool | None = None
        chosen: list[Cookie] = []
        for cookie in self.cookies:
            if cookie.domain is None:
                if same_origin is None:
                    same_origin = origin(url) == origin(user_url)
                if not same_origin:
                    continue
            elif not _domain_matches(host, cookie.domain, cookie.subdomains):
                continue
            if cookie.secure and not https:
                continue
            if not _path_matches(path, cookie.path):
                continue
            chosen.append(cookie)
        if not chosen:
            return None
        # RFC 6265 5.4: longer paths first; otherwise in the order given (a stable sort).
        chosen.sort(key=lambda c: -len(c.path))
        return "; ".join(f"{c.name}={c.value}" for c in chosen)


NO_COOKIES = Cookies()


def _domain_matches(host: str, domain: str, subdomains: bool) -> bool:
    if host == domain:
        return True
    if not subdomains or not host.endswith("." + domain):
        return False
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        return True
    return False  # an IP address has no subdomains


def _path_matches(path: str, cookie_path: str) -> bool:
    """RFC 6265 5.1.4."""
    if path == cookie_path:
        return True
    return path.startswith(cookie_path) and (
        cookie_path.endswith("/") or path[len(cookie_path)] == "/"
    )


def parse_cookie_string(text: str) -> Cookies:
    """`'name=value; name2=value2'` (curl's `-b` string) -> Cookies for the user's URL's
    origin; raises UsageError."""
    cookies: list[Cookie] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, eq, value = part.strip().partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise UsageError(
                f"invalid cookie {_quote(part.strip())} (expected 'name=value; ...'; "
                "a cookie file is read with --load-cookies FILE)"
            )
        cookies.append(Cookie(name, value))
    if not cookies:
        raise UsageError("no cookie given (expected 'name=value; ...')")
    return Cookies(tuple(cookies))


def load_cookie_file(path: str | os.PathLike[str], *, now: float | None = None) -> Cookies:
    """The cookies of a Netscape cookie file (curl's, wget's, aria2c's `cookies.txt`), read
    by the standard library's `MozillaCookieJar`; expired cookies are left out (session
    cookies, with no expiry or 0, are kept). Raises UsageError for a file that cannot be
    read or is not one."""
    name = os.fspath(path)
    jar = http.cookiejar.MozillaCookieJar()
    try:
        with warnings.catch_warnings():
            # The jar warns ("http.cookiejar bug!") about a malformed line before it raises.
            warnings.simplefilter("ignore")
            jar.load(name, ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError:
        # Not the jar's message: it quotes the line, which may hold a cookie's value.
        raise UsageError(
            f"{name} is not a Netscape cookie file (a '# Netscape HTTP Cookie File' line, "
            "then one cookie a line in 7 tab-separated fields)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not a Netscape cookie file: not text") from None
    current = time.time() if now is None else now
    cookies: list[Cookie] = []
    for item in jar:
        if item.expires and item.expires <= current:
            continue
        if item.value is None or _BAD_VALUE.search(item.value) or _BAD_VALUE.search(item.name):
            continue  # no value, or one that cannot go into a header: a browser would not send it
        domain = item.domain.lower()
        subdomains = domain.startswith(".")
        cookies.append(
            Cookie(
                item.name, item.value, domain.lstrip("."), subdomains, item.path or "/", item.secure
            )
        )
    return Cookies(tuple(cookies))


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
