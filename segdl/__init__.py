"""segdl: download files over several HTTP connections at once, and never a wrong file.

    >>> import segdl
    >>> result = segdl.download("https://example.org/big.iso", connections=16)  # doctest: +SKIP
    >>> results = segdl.download_many(["https://example.org/a.jpg"], "data")  # doctest: +SKIP
    >>> result = segdl.extract("https://example.org/data.zip", "data")  # doctest: +SKIP

Errors derive from `segdl.SegdlError`; progress is observed with a `segdl.Listener`.
"""

from ._version import __version__
from .api import download, download_many, fetch, iter_download_many, open
from .archive.extractor import ExtractResult
from .archive.remote import RemoteExtractResult, extract
from .batch.manifest import BadRecord, Record, read_manifest
from .batch.run import BatchResults, ItemResult
from .core.events import Listener, StartInfo, TqdmListener
from .errors import (
    ArchiveError,
    ArchiveLimitError,
    ConnectError,
    ContentTypeError,
    CorruptArchiveError,
    DestinationError,
    DiskFullError,
    HTTPStatusError,
    InsufficientSpaceError,
    IntegrityError,
    Interrupted,
    InvalidURLError,
    MissingExtraError,
    NameResolutionError,
    NetworkError,
    ProtocolViolation,
    RangeIgnoredError,
    RedirectError,
    RefusedError,
    RemoteChangedError,
    SegdlError,
    TimeoutError_,
    TLSError,
    TooLargeError,
    TransferError,
    TruncatedError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
    UsageError,
)
from .file import Clock, Result
from .stream import RemoteFile

__all__ = [
    "ArchiveError",
    "ArchiveLimitError",
    "BadRecord",
    "BatchResults",
    "Clock",
    "ConnectError",
    "ContentTypeError",
    "CorruptArchiveError",
    "DestinationError",
    "DiskFullError",
    "ExtractResult",
    "HTTPStatusError",
    "InsufficientSpaceError",
    "IntegrityError",
    "Interrupted",
    "InvalidURLError",
    "ItemResult",
    "Listener",
    "MissingExtraError",
    "NameResolutionError",
    "NetworkError",
    "ProtocolViolation",
    "RangeIgnoredError",
    "Record",
    "RedirectError",
    "RefusedError",
    "RemoteChangedError",
    "RemoteExtractResult",
    "RemoteFile",
    "Result",
    "SegdlError",
    "StartInfo",
    "TLSError",
    "TimeoutError_",
    "TooLargeError",
    "TqdmListener",
    "TransferError",
    "TruncatedError",
    "UnsafeArchiveError",
    "UnsupportedArchiveError",
    "UsageError",
    "__version__",
    "download",
    "download_many",
    "extract",
    "fetch",
    "iter_download_many",
    "open",
    "read_manifest",
]
