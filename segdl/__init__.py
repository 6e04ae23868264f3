"""segdl: download files over several HTTP connections at once, and never a wrong file.

    >>> import segdl
    >>> result = segdl.download("https://example.org/big.iso", connections=16)  # doctest: +SKIP
    >>> results = segdl.download_many(["https://example.org/a.jpg"], "data")  # doctest: +SKIP
    >>> result = segdl.extract("https://example.org/data.zip", "data")  # doctest: +SKIP

Errors derive from `segdl.SegdlError`; progress is observed with a `segdl.Listener`.
"""

from ._version import __version__
from .api import Listener, download, download_many, fetch, iter_download_many, open
from .archive.extractor import ExtractResult
from .archive.remote import ExtractListener, RemoteExtractResult, extract
from .bars import TqdmListener
from .batch.manifest import BadRecord, Record, read_manifest
from .batch.results import BatchListener, ItemResult
from .batch.run import BatchResults
from .core.clock import Clock
from .core.events import StartInfo, TransferListener
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
from .file import Result
from .stream import RemoteFile

__all__ = [
    "ArchiveError",
    "ArchiveLimitError",
    "BadRecord",
    "BatchListener",
    "BatchResults",
    "Clock",
    "ConnectError",
    "ContentTypeError",
    "CorruptArchiveError",
    "DestinationError",
    "DiskFullError",
    "ExtractListener",
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
    "TransferListener",
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
