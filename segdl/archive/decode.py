"""Decompression with bounded output, shared by tar streams and zip members.

A decoder takes compressed bytes and returns at most `max_length` bytes per call, so a bomb is
noticed one chunk after its limit, never after it has filled memory; `held()` says how many of
the bytes given are not consumed yet, so ratios count what was actually consumed. zstd's own
reader neither bounds a call's output nor reports a truncated stream, so `ZstdFrames` follows
the frame structure alongside it.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Protocol

from ..errors import CorruptArchiveError, MissingExtraError, UnsupportedArchiveError

OUT_CHUNK = 256 << 10  # decompressed bytes per call: the granularity of the limits
XZ_MEMLIMIT = 256 << 20  # xz -9 needs 65 MiB; a larger dictionary is refused

ZIP_METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}
_OTHER_ZIP_METHODS = {9: "deflate64", 93: "zstd", 95: "xz", 98: "PPMd", 99: "AES encryption"}


class Decoder(Protocol):
    """The shape shared by `zlib`, `bz2` and `lzma` decompressors, with bounded output.

    `feed_size` is how many compressed bytes to give at once: small where the decompressor
    buffers input it does not report (bz2, lzma), so the ratios stay accurate.
    """

    feed_size: int

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int) -> bytes: ...

    def held(self) -> int:
        """Bytes given to the decoder that it has not consumed (yet), as far as it tells."""
        ...


class _Zlib:
    """zlib's decompressobj, made to look like the bz2/lzma decompressors."""

    feed_size = 64 << 10  # exact: what max_length leaves unconsumed is in unconsumed_tail

    def __init__(self, wbits: int, label: str) -> None:
        self._d = zlib.decompressobj(wbits)
        self._label = label
        self._tail = b""
        self._full = False  # the last call filled max_length: more output may be pending

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._full

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._tail:
            data = self._tail + data
        try:
            out = self._d.decompress(data, max_length)
        except zlib.error as exc:
            raise CorruptArchiveError(f"invalid {self._label} data ({exc})") from None
        self._tail = self._d.unconsumed_tail
        self._full = len(out) >= max_length
        return out

    def held(self) -> int:
        return len(self._tail) + len(self._d.unused_data)


class _Buffered:
    """A bz2 or lzma decompressor, whose errors become `CorruptArchiveError`."""

    feed_size = 8 << 10

    def __init__(self, decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor, label: str):
        self._d = decompressor
        self._label = label

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            return self._d.decompress(data, max_length)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise CorruptArchiveError(f"invalid {self._label} data ({exc})") from None

    def held(self) -> int:
        return len(self._d.unused_data)


class _Stored:
    """Zip's method 0: the bytes as they are."""

    feed_size = 256 << 10
    eof = False
    needs_input = True
    unused_data = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return data

    def held(self) -> int:
        return 0


class _ZipLzma:
    """Zip's method 14: a version, the size of the properties, LZMA1 properties, raw LZMA1.

    The dictionary is cut to the member's size: LZMA never refers further back than what it
    has produced, and a forged header must not make us allocate gigabytes.
    """

    feed_size = 8 << 10

    def __init__(self, file_size: int) -> None:
        self._file_size = file_size
        self._head = b""
        self._d: _Buffered | None = None

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof

    @property
    def needs_input(self) -> bool:
        return self._d is None or self._d.needs_input

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data if self._d is not None else b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 9:
                return b""
            if self._head[2:4] != b"\x05\x00" or self._head[4] >= 9 * 5 * 5:
                raise CorruptArchiveError("invalid LZMA properties")
            lc, rest = self._head[4] % 9, self._head[4] // 9
            lp, pb = rest % 5, rest // 5
            dict_size = int.from_bytes(self._head[5:9], "little")
            dict_size = max(4096, min(dict_size, self._file_size))
            lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}
            try:
                decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])
            except lzma.LZMAError as exc:
                raise CorruptArchiveError(f"invalid LZMA properties ({exc})") from None
            self._d = _Buffered(decompressor, "LZMA")
            data, self._head = self._head[9:], b""
        return self._d.decompress(data, max_length)

    def held(self) -> int:
        return len(self._head) + (self._d.held() if self._d is not None else 0)


def tar_decoder(fmt: str) -> Callable[[], Decoder]:
    """A factory of decoders for one stream of a compressed tar (gzip, bzip2 or xz)."""
    if fmt == "tar.gz":
        return lambda: _Zlib(47, "gzip")
    if fmt == "tar.bz2":
        return lambda: _Buffered(bz2.BZ2Decompressor(), "bzip2")
    if fmt == "tar.xz":
        return lambda: _Buffered(lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT), "xz")
    raise ValueError(fmt)


def zip_decoder(method: int, file_size: int) -> Decoder:
    """A decoder for one zip member's data; raises for a method segdl does not read."""
    if method == 0:
        return _Stored()
    if method == 8:
        return _Zlib(-15, "deflate")
    if method == 12:
        return _Buffered(bz2.BZ2Decompressor(), "bzip2")
    if method == 14:
        return _ZipLzma(file_size)
    raise UnsupportedArchiveError(f"unsupported zip compression: {zip_method_name(method)}")


def zip_method_name(method: int) -> str:
    return ZIP_METHODS.get(method) or _OTHER_ZIP_METHODS.get(method) or f"method {method}"


def import_zstandard() -> ModuleType:
    """The optional `zstandard` module, or a `MissingExtraError` naming the extra."""
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise MissingExtraError(
            "a .tar.zst archive needs the zstandard module: pip install 'segdl[zstd]'",
            extra="zstd",
        ) from None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_zstd_skippable(magic: bytes) -> bool:
    return len(magic) >= 4 and magic[0] & 0xF0 == 0x50 and magic[1:4] == b"\x2a\x4d\x18"


class ZstdFrames:
    """Follows zstd frame and block headers over the compressed bytes (RFC 8878), to tell a
    complete stream from a truncated one, which the zstandard reader does not."""

    def __init__(self) -> None:
        self.frames = 0
        self.invalid = False  # bytes that are no frame: the decompressor reports them
        self._state = "magic"
        self._need = 4
        self._buf = bytearray()
        self._skip = 0
        self._then = ("magic", 4)
        self._checksum = False

    @property
    def complete(self) -> bool:
        """At the end of a frame, after at least one frame."""
        return (
            not self.invalid
            and self.frames > 0
            and self._state == "magic"
            and not self._buf
            and not self._skip
        )

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and not self.invalid:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                if not self._skip:
                    self._state, self._need = self._then
                continue
            step = min(self._need - len(self._buf), n - i)
            self._buf += data[i : i + step]
            i += step
            if len(self._buf) == self._need:
                field = bytes(self._buf)
                self._buf.clear()
                self._step(field)

    def _skip_then(self, count: int, state: str, need: int) -> None:
        if count:
            self._skip, self._then = count, (state, need)
        else:
            self._state, self._need = state, need

    def _step(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            if field == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif is_zstd_skippable(field):
                self._state, self._need = "skippable", 4
            else:
                self.invalid = True
        elif state == "skippable":
            self._skip_then(int.from_bytes(field, "little"), "magic", 4)
        elif state == "descriptor":
            descriptor = field[0]
            single = descriptor >> 5 & 1
            self._checksum = bool(descriptor >> 2 & 1)
            size = (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
            size += (single, 2, 4, 8)[descriptor >> 6]
            if descriptor & 0x08:  # the reserved bit
                self.invalid = True
            self._skip_then(size, "block", 3)
        elif state == "block":
            header = int.from_bytes(field, "little")
            last, kind, size = header & 1, header >> 1 & 3, header >> 3
            if kind == 3:
                self.invalid = True
                return
            content = 1 if kind == 1 else size
            if not last:
                self._skip_then(content, "block", 3)
            elif self._checksum:
                self._skip_then(content, "checksum", 4)
            else:
                self.frames += 1
                self._skip_then(content, "magic", 4)
        elif state == "checksum":
            self.frames += 1
            self._state, self._need = "magic", 4
