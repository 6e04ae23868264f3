"""The exception tree of segdl: every error the library raises derives from `SegdlError`.

    SegdlError
    ├── UsageError                 bad options or arguments (CLI exit code 2)
    │   └── InvalidURLError        not an absolute http(s) URL
    ├── TransferError              something went wrong between us and the server
    │   ├── NetworkError           the request failed, or the answer broke off
    │   │   ├── ConnectError       connection refused / reset / DNS / TLS handshake failure
    │   │   │   └── TLSError       certificate verification and other TLS failures (never retried)
    │   │   ├── TimeoutError_      connect timeout, or silence longer than the read timeout
    │   │   └── TruncatedError     the body ended before the promised length
    │   ├── HTTPStatusError        an unexpected status code (carries the status and Retry-After)
    │   ├── ProtocolViolation      the server broke the range contract (wrong Content-Range,
    │   │   │                      long or encoded body, ...): nothing it sent is written
    │   │   └── RangeIgnoredError  the server answered a ranged request with the whole file (200)
    │   ├── RemoteChangedError     the remote file changed (validator or size mismatch)
    │   └── RedirectError          too many redirects, a loop, a refused scheme or a downgrade
    ├── DestinationError           the local side: exists, permission, not a directory, disk full
    │   └── DiskFullError          ENOSPC / EFBIG / not enough free space
    ├── IntegrityError             the finished file failed a checksum or digest check
    └── Interrupted                stopped by the user (SIGINT/SIGTERM) or a cancel event; resumable

Only `transport` translates requests/urllib3/socket exceptions into this tree.
"""

from __future__ import annotations

__all__ = [
    "ConnectError",
    "DestinationError",
    "DiskFullError",
    "HTTPStatusError",
    "IntegrityError",
    "Interrupted",
    "InvalidURLError",
    "NetworkError",
    "ProtocolViolation",
    "RangeIgnoredError",
    "RedirectError",
    "RemoteChangedError",
    "SegdlError",
    "TLSError",
    "TimeoutError_",
    "TransferError",
    "TruncatedError",
    "UsageError",
]


class SegdlError(Exception):
    """Base class of every error segdl raises."""


class UsageError(SegdlError):
    """An option or argument is invalid."""


class InvalidURLError(UsageError):
    """The URL is not an absolute http:// or https:// URL."""


class TransferError(SegdlError):
    """A failure while talking to the server."""


class NetworkError(TransferError):
    """The connection failed or broke off."""


class ConnectError(NetworkError):
    """The connection could not be established or was reset."""


class TLSError(ConnectError):
    """A TLS failure such as a certificate that does not verify."""


class TimeoutError_(NetworkError):
    """Connecting took too long, or the server went silent for longer than the read timeout."""


class TruncatedError(NetworkError):
    """The body ended before the length the server promised."""


class HTTPStatusError(TransferError):
    """The server answered with a status we cannot use."""

    def __init__(self, message: str, *, status: int, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProtocolViolation(TransferError):
    """The server broke the HTTP range contract; nothing from that answer was written."""


class RangeIgnoredError(ProtocolViolation):
    """The server sent the whole file (200) in answer to a range request."""


class RemoteChangedError(TransferError):
    """The remote file is not the one we started with (validator or size changed)."""


class RedirectError(TransferError):
    """A redirect was refused: too many, a loop, a non-http(s) target or a downgrade to http."""


class DestinationError(SegdlError):
    """The destination cannot be written: it exists, is a directory, or permission is denied."""


class DiskFullError(DestinationError):
    """No space left on the destination's file system."""


class IntegrityError(SegdlError):
    """The downloaded bytes do not match the expected checksum or the server's digest."""


class Interrupted(SegdlError):
    """The download was stopped by a signal or a cancel request; running it again resumes it."""
