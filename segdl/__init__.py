"""segdl: download one large file over several HTTP connections at once, and never a wrong file.

    >>> import segdl
    >>> result = segdl.download("https://example.org/big.iso", connections=16)  # doctest: +SKIP

Errors derive from `segdl.SegdlError`; progress is observed with a `segdl.Listener`.
"""

__version__ = "0.1.0"

from .api import download
from .engine import Clock, Result
from .errors import (
    ConnectError,
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
    TransferError,
    TruncatedError,
    UsageError,
)
from .progress import Listener, StartInfo, TqdmListener

__all__ = [
    "Clock",
    "ConnectError",
    "DestinationError",
    "DiskFullError",
    "HTTPStatusError",
    "IntegrityError",
    "Interrupted",
    "InvalidURLError",
    "Listener",
    "NetworkError",
    "ProtocolViolation",
    "RangeIgnoredError",
    "RedirectError",
    "RemoteChangedError",
    "Result",
    "SegdlError",
    "StartInfo",
    "TLSError",
    "TimeoutError_",
    "TqdmListener",
    "TransferError",
    "TruncatedError",
    "UsageError",
    "__version__",
    "download",
]
