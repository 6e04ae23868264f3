"""segdl: download files over several HTTP connections at once, and never a wrong file.

    >>> import segdl
    >>> result = segdl.download("https://example.org/big.iso", connections=16)  # doctest: +SKIP
    >>> results = segdl.download_many(["https://example.org/a.jpg"], "data")  # doctest: +SKIP

Errors derive from `segdl.SegdlError`; progress is observed with a `segdl.Listener`.
"""

__version__ = "0.1.0"

from .api import download, download_many, fetch, iter_download_many, open
from .batch.manifest import BadRecord, Record, read_manifest
from .batch.run import ItemResult
from .engine import Clock, Result
from .errors import (
    ConnectError,
    ContentTypeError,
    DestinationError,
    DiskFullError,
    HTTPStatusError,
    IntegrityError,
    Interrupted,
    InvalidURLError,
    NetworkError,
    ProtocolViolation,
    RangeIgnoredError,
    RedirectError,
    RemoteChangedError,
    SegdlError,
    TimeoutError_,
    TLSError,
    TooLargeError,
    TransferError,
    TruncatedError,
    UsageError,
)
from .progress import Listener, StartInfo, TqdmListener
from .stream import RemoteFile

__all__ = [
    "BadRecord",
    "Clock",
    "ConnectError",
    "ContentTypeError",
    "DestinationError",
    "DiskFullError",
    "HTTPStatusError",
    "IntegrityError",
    "Interrupted",
    "InvalidURLError",
    "ItemResult",
    "Listener",
    "NetworkError",
    "ProtocolViolation",
    "RangeIgnoredError",
    "Record",
    "RedirectError",
    "RemoteChangedError",
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
    "UsageError",
    "__version__",
    "download",
    "download_many",
    "fetch",
    "iter_download_many",
    "open",
    "read_manifest",
]
