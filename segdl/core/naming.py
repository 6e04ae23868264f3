"""Choosing the local file name: parsing Content-Disposition, reading the URL's last path
segment, and turning whatever the server or URL says into one safe path component.

Everything here treats the name as hostile: the result never contains a path separator or
NUL, never starts with a dot, and fits in 255 bytes of UTF-8.
"""

from __future__ import annotations

import codecs
import unicodedata
from urllib.parse import unquote, unquote_to_bytes, urlsplit

__all__ = [
    "derive_filename",
    "filename_from_url",
    "parse_content_disposition",
    "sanitize_filename",
]

# NAME_MAX on Linux file systems: one path component may not exceed 255 bytes.
MAX_NAME_BYTES = 255

# RFC 8187 requires UTF-8 and allows ISO-8859-1; the others are what servers actually send.
# An allow-list, because bytes.decode() also accepts codecs like "unicode_escape" that would
# let the header smuggle in characters it never percent-encoded.
_EXT_VALUE_CHARSETS = frozenset({"utf-8", "iso8859-1", "ascii", "cp1252"})

# A suffix longer than this is more likely part of the name than a file type, so truncation
# does not try to preserve it.
_MAX_SUFFIX_CHARS = 16
# The inner suffix of a double extension (".tar" in ".tar.gz") is kept only if it is this short.
_MAX_INNER_SUFFIX_CHARS = 4

# Bidi controls let "photo\u202egpj.exe" display as "photoexe.jpg"; they are invisible in a
# file name, so dropping them loses nothing legitimate.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Cc covers C0, DEL and C1. Cs (lone surrogates) cannot be encoded to UTF-8 at all, and
# line/paragraph separators break every log line and terminal the name is printed to.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def parse_content_disposition(value: str) -> str | None:
    """Return the file name a Content-Disposition header value suggests, unsanitized.

    Follows RFC 6266: a valid ``filename*`` (RFC 8187 ext-value) wins over ``filename``.
    Parameter names are case-insensitive, the disposition type is ignored, and an unquoted
    value runs to the next ``;`` (spaces included), as browsers accept. Returns None when no
    usable name is present.
    """
    params = _parse_params(value)
    extended = params.get("filename*")
    if extended is not None:
        decoded = _decode_ext_value(extended)
        if decoded:
            return decoded
    plain = params.get("filename")
    if plain:
        return _repair_utf8_as_latin1(plain)
    return None


def filename_from_url(url: str) -> str | None:
    """Return the percent-decoded last segment of the URL's path, or None if it is empty."""
    path = urlsplit(url).path
    # Split before decoding so an encoded %2F stays inside the segment; sanitize_filename
    # later reduces it to its last component anyway.
    segment = path.rpartition("/")[2]
    if not segment:
        return None
    decoded = unquote(segment, encoding="utf-8", errors="replace")
    return decoded or None


def sanitize_filename(
    name: str | None, fallback: str = "download", max_bytes: int = MAX_NAME_BYTES
) -> str:
    """Reduce ``name`` to a single safe path component, or return ``fallback``.

    Keeps the last component for both ``/`` and ``\\``, drops control characters, strips
    surrounding whitespace, refuses empty names, ``.``, ``..`` and dot-files, and caps the
    result at ``max_bytes`` (255) UTF-8 bytes while keeping the extension. ``fallback`` must
    itself be safe, otherwise ValueError is raised: a bad fallback is a programming error,
    not server input.
    """
    cleaned = _clean(name, max_bytes)
    if cleaned is not None:
        return cleaned
    return _checked_fallback(fallback)


def derive_filename(
    url: str,
    content_disposition: str | None,
    fallback: str = "download",
    max_bytes: int = MAX_NAME_BYTES,
) -> str:
    """Pick the local file name: Content-Disposition, else the URL, else ``fallback``.

    ``max_bytes`` leaves room for companion suffixes such as ``.part`` within NAME_MAX.
    """
    candidates: list[str | None] = []
    if content_disposition is not None:
        candidates.append(parse_content_disposition(content_disposition))
    candidates.append(filename_from_url(url))
    for candidate in candidates:
        cleaned = _clean(candidate, max_bytes)
        if cleaned is not None:
            return cleaned
    return _checked_fallback(fallback)


def _checked_fallback(fallback: str) -> str:
    if _clean(fallback) != fallback:
        raise ValueError(f"fallback file name {fallback!r} is not a safe file name")
    return fallback


def dropped_character(ch: str) -> bool:
    """Whether `ch` never stays in a name: controls, surrogates, line and paragraph
    separators, and the bidirectional controls that make a name read otherwise than it is."""
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _DROPPED_CATEGORIES


def _clean(name: str | None, max_bytes: int = MAX_NAME_BYTES) -> str | None:
    """The sanitized name, or None when nothing safe remains."""
    if name is None:
        return None
    # Control characters go first so that "..\x00" or " \x01/x" cannot dodge the checks below.
    name = "".join(ch for ch in name if not dropped_character(ch))
    name = name.replace("\\", "/").rpartition("/")[2].strip()
    if not name or name.startswith("."):
        return None
    return _truncate(name, max_bytes)


def _truncate(name: str, max_bytes: int) -> str:
    encoded = name.encode("utf-8")
    if len(encoded) <= max_bytes:
        return name
    stem, ext = _split_extension(name)
    budget = max_bytes - len(ext.encode("utf-8"))
    # errors="ignore" drops a multibyte character the cut went through, never half of one.
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip()
    return cut + ext


def _split_extension(name: str) -> tuple[str, str]:
    """Split off the extension to keep when truncating: ".gz", or ".tar.gz" when short."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or not _is_suffix(suffix, _MAX_SUFFIX_CHARS):
        return name, ""
    ext = "." + suffix
    inner_stem, dot, inner = stem.rpartition(".")
    if dot and inner_stem and _is_suffix(inner, _MAX_INNER_SUFFIX_CHARS):
        return inner_stem, "." + inner + ext
    return stem, ext


def _is_suffix(text: str, max_chars: int) -> bool:
    return 0 < len(text) <= max_chars and text.isalnum()


def _parse_params(value: str) -> dict[str, str]:
    """Parse ``type; name=value; ...`` into lower-cased names; the first occurrence wins.

    Hand-written rather than email.message, which rejects or mangles the unquoted values
    with spaces that real servers send.
    """
    params: dict[str, str] = {}
    pos, end = 0, len(value)
    while pos < end:
        semi = value.find(";", pos)
        eq = value.find("=", pos)
        if eq == -1 or (semi != -1 and semi < eq):
            # A segment without "=": the disposition type, or garbage.
            if semi == -1:
                break
            pos = semi + 1
            continue
        name = value[pos:eq].strip().lower()
        pos = eq + 1
        while pos < end and value[pos] in " \t":
            pos += 1
        if pos < end and value[pos] == '"':
            param_value, pos = _read_quoted(value, pos + 1)
            semi = value.find(";", pos)
            pos = end if semi == -1 else semi + 1
        else:
            semi = value.find(";", pos)
            stop = end if semi == -1 else semi
            param_value = value[pos:stop].strip()
            pos = stop + 1
        if name and name not in params:
            params[name] = param_value
    return params


def _read_quoted(value: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string body starting after the opening quote; return it and the end.

    An unterminated string runs to the end of the header, as browsers read it.
    """
    out: list[str] = []
    end = len(value)
    while pos < end:
        ch = value[pos]
        if ch == "\\" and pos + 1 < end:
            out.append(value[pos + 1])
            pos += 2
        elif ch == '"':
            return "".join(out), pos + 1
        else:
            out.append(ch)
            pos += 1
    return "".join(out), end


def _decode_ext_value(value: str) -> str | None:
    """Decode an RFC 8187 ext-value ``charset'language'pct-encoded``; None if it is invalid."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        return None
    charset, _language, encoded = parts
    try:
        codec = codecs.lookup(charset.strip()).name
    except LookupError:
        return None
    if codec not in _EXT_VALUE_CHARSETS or not encoded.isascii() or not _valid_pct(encoded):
        return None
    try:
        return unquote_to_bytes(encoded).decode(codec)
    except UnicodeDecodeError:
        return None


def _valid_pct(encoded: str) -> bool:
    """True if every "%" starts a two-hex-digit escape (unquote would keep bad ones verbatim)."""
    pos = encoded.find("%")
    while pos != -1:
        escape = encoded[pos + 1 : pos + 3]
        if len(escape) != 2 or not all(c in "0123456789abcdefABCDEF" for c in escape):
            return False
        pos = encoded.find("%", pos + 3)
    return True


def _repair_utf8_as_latin1(name: str) -> str:
    """Undo the mojibake of a raw UTF-8 ``filename`` read as ISO-8859-1 by the HTTP client.

    http.client decodes header bytes as ISO-8859-1, so a server sending raw UTF-8 (common,
    though not allowed) arrives as "â\x82¬". Browsers try UTF-8 first as well.
    """
    if name.isascii():
        return name
    try:
        return name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def truncate_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Cut ``name`` to ``max_bytes`` of UTF-8 the way sanitized names are cut: the extension
    (``.gz``, or a short double one like ``.tar.gz``) is kept and no character is split.

    A name that fits is returned unchanged. It does not sanitize: pass one safe component,
    and a budget well above the extension's length (NAME_MAX-sized ones are).
    """
    return _truncate(name, max_bytes)
