"""Destinations of batch items: the output template (``{name}``, ``{index}``, any manifest
column, folders separated by ``/``) and the aria2 ``out=``/``dir=`` paths, each made into a
relative path that cannot leave the download directory.

It owns the template syntax and its checks, and the rule that every value put into a path
is data: it is sanitized into one path component, so no record can add a separator, a
``..``, a hidden file or a control character. Nothing here touches the disk.
"""

from __future__ import annotations

import posixpath
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import NamedTuple

from ..core.naming import MAX_NAME_BYTES, dropped_character, truncate_name
from ..errors import SegdlError, UsageError

__all__ = ["DEFAULT", "Template", "TemplateError", "safe_relative"]

DEFAULT = "{name}"

_NAME_FIELDS = frozenset({"name", "stem", "ext"})

# Longest excerpt of a value quoted in an error message, which must stay one short line.
_QUOTE_CHARS = 60


class TemplateError(SegdlError, ValueError):
    """One item's fields cannot make a safe path: that item fails, the batch goes on."""


class _Piece(NamedTuple):
    text: str  # literal text, or the field's name
    is_field: bool


@dataclass(frozen=True)
class Template:
    """A parsed output template; constructing one checks it (`UsageError` when invalid).

    Fields are plain names in braces: a manifest column, or one of the built-ins ``{name}``
    (the remote's file name, already safe), ``{stem}`` and ``{ext}`` (``name`` split as by
    ``os.path.splitext``, so ``{stem}{ext}`` is ``name``) and ``{index}`` (the item's position
    in the input). Built-ins win over manifest columns of the same name. ``{{`` and ``}}``
    are literal braces; ``/`` separates folders.
    """

    text: str
    _components: tuple[tuple[_Piece, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_components", _parse(self.text))

    @classmethod
    def parse(cls, text: str) -> Template:
        """The template `text`, checked; UsageError if it is invalid."""
        return cls(text)

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields the template uses, built-ins included."""
        return frozenset(p.text for comp in self._components for p in comp if p.is_field)

    @property
    def record_fields(self) -> frozenset[str]:
        """The fields it takes from the record: the built-ins left out."""
        return self.fields - _NAME_FIELDS - {"index"}

    @property
    def needs_name(self) -> bool:
        """True if it uses ``{name}``, ``{stem}`` or ``{ext}``: the destination is then known
        only once the first response has told the remote's name."""
        return not self.fields.isdisjoint(_NAME_FIELDS)

    def render(
        self,
        fields: Mapping[str, str],
        *,
        index: int,
        name: str | None = None,
        max_bytes: int = MAX_NAME_BYTES,
    ) -> PurePosixPath:
        """The relative path for one item; TemplateError if its fields cannot make a safe one.

        A component longer than NAME_MAX is cut keeping its extension; ``max_bytes`` caps the
        last one (the file name) lower, to leave room for companion suffixes like ``.part``.
        """
        values = {key: self._value(key, fields, index, name) for key in self.fields}
        last = len(self._components) - 1
        parts = [
            _fit(
                "".join(values[p.text] if p.is_field else p.text for p in comp),
                max_bytes if i == last else MAX_NAME_BYTES,
            )
            for i, comp in enumerate(self._components)
        ]
        return PurePosixPath(*parts)

    @staticmethod
    def _value(key: str, fields: Mapping[str, str], index: int, name: str | None) -> str:
        if key == "index":
            return str(index)
        if key in _NAME_FIELDS:
            if name is None:
                raise TemplateError(f"{{{key}}} needs the remote's file name, not known yet")
            # The engine passes a safe name; cleaning it again costs little and keeps this
            # module's promise independent of the caller.
            clean = _clean_value(name, "the remote's file name")
            if key == "name":
                return clean
            stem, ext = posixpath.splitext(clean)
            return stem if key == "stem" else ext
        value = fields.get(key)
        if value is None:
            raise TemplateError(f"the record has no field {key!r}")
        return _clean_value(value, f"field {key!r}")


def safe_relative(text: str, *, max_bytes: int = MAX_NAME_BYTES) -> PurePosixPath:
    """The relative path an aria2 ``out=`` or ``dir=`` value names, made safe.

    ``/`` and ``\\`` both separate components; empty and ``.`` components are dropped; each
    other component is sanitized like a template field value. TemplateError if the path is
    absolute, contains ``..`` or is empty. ``max_bytes`` caps the last component.
    """
    unified = text.strip().replace("\\", "/")
    if unified.startswith("/"):
        raise TemplateError(f"absolute path {_quote(text)}")
    names = [c for c in unified.split("/") if c not in ("", ".")]
    if ".." in names:
        raise TemplateError(f"path {_quote(text)} goes up with '..'")
    if not names:
        raise TemplateError(f"empty path {_quote(text)}")
    last = len(names) - 1
    return PurePosixPath(
        *(
            _fit(
                _clean_value(c, f"{_quote(c)} in {_quote(text)}"),
                max_bytes if i == last else MAX_NAME_BYTES,
            )
            for i, c in enumerate(names)
        )
    )


def _clean_value(value: str, what: str) -> str:
    """`value` as one path component: no separator, control character or leading dot."""
    # Controls go first so that "..\x00" or "\x01/" cannot dodge the checks below.
    cleaned = "".join(ch for ch in value if not dropped_character(ch))
    cleaned = cleaned.replace("/", "_").replace("\\", "_").strip()
    if cleaned in ("", ".", ".."):
        raise TemplateError(f"{what} is empty or a dot name once sanitized: {_quote(value)}")
    # Data must not create hidden files; one "_" per dot keeps ".x" and "..x" apart.
    rest = cleaned.lstrip(".")
    return "_" * (len(cleaned) - len(rest)) + rest


def _fit(component: str, max_bytes: int) -> str:
    """`component` cut to `max_bytes`, checked once more now that the pieces are joined."""
    cut = truncate_name(component, max_bytes)
    # Joined pieces can still make a dot name ("{ext}{ext}" with ext "."), and a cut stem that
    # was all whitespace would leave a bare extension: a hidden file nobody asked for.
    if (
        cut in ("", ".", "..")
        or len(cut.encode("utf-8")) > max_bytes
        or (cut.startswith(".") and not component.startswith("."))
    ):
        raise TemplateError(f"no safe file name can be made from {_quote(component)}")
    return cut


def _parse(text: str) -> tuple[tuple[_Piece, ...], ...]:
    where = f"output template {_quote(text)}"
    if not text:
        raise UsageError("the output template is empty")
    if "\\" in text:
        raise UsageError(f"{where}: backslashes are not allowed; separate folders with '/'")
    if any(dropped_character(ch) for ch in text):
        raise UsageError(f"{where}: control characters are not allowed")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(f"{where}: {exc} (write '{{{{' and '}}}}' for literal braces)") from None
    components: list[list[_Piece]] = [[]]
    for literal, key, spec, conversion in parsed:
        head, *rest = literal.split("/")
        if head:
            components[-1].append(_Piece(head, False))
        for part in rest:
            components.append([_Piece(part, False)] if part else [])
        if key is None:
            continue
        _check_field(where, key, spec, conversion)
        components[-1].append(_Piece(key, True))
    last = len(components) - 1
    for i, comp in enumerate(components):
        if not comp:
            problem = (
                "absolute paths are not allowed"
                if i == 0
                else "a trailing '/' is not allowed"
                if i == last
                else "empty folder names ('//') are not allowed"
            )
            raise UsageError(f"{where}: {problem}")
        if all(not p.is_field for p in comp) and "".join(p.text for p in comp) in (".", ".."):
            raise UsageError(f"{where}: '.' and '..' folders are not allowed")
    return tuple(tuple(comp) for comp in components)


def _check_field(where: str, key: str, spec: str | None, conversion: str | None) -> None:
    if not key:
        raise UsageError(f"{where}: '{{}}' needs a field name inside the braces")
    if "." in key or "[" in key:
        raise UsageError(f"{where}: {{{key}}}: attribute and index access are not allowed")
    if key != key.strip():
        raise UsageError(f"{where}: {{{key}}}: no spaces around field names")
    if conversion is not None:
        raise UsageError(f"{where}: {{{key}!{conversion}}}: conversions are not allowed")
    if spec:
        raise UsageError(f"{where}: {{{key}:{spec}}}: format specs are not allowed")


def _quote(value: str) -> str:
    """`value` quoted for a one-line message, shortened when long."""
    if len(value) > _QUOTE_CHARS:
        return repr(value[:_QUOTE_CHARS]) + "..."
    return repr(value)
