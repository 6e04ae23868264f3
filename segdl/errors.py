"""The exception tree of segdl: every error the library raises derives from `SegdlError`.

    SegdlError
    ├── UsageError                 bad options or arguments (CLI exit code 2)
    │   └── InvalidURLError        not an absolute http(s) URL
    ├── TransferError              something went wrong between us and the server
    │   ├── NetworkError           the request failed, or the answer broke off
    │   │   ├── ConnectError       connection refused / reset / DNS / TLS handshake failure
    │   │   │   ├── NameResolutionError  the host name does not resolve (DNS)
    │   │   │   ├── RefusedError   nothing listens on the host's port (ECONNREFUSED)
    │   │   │   ├── ProxyError     the proxy is unreachable or refused us (never retried)
    │   │   │   └── TLSError       certificate verification and other TLS failures (never retried)
    │   │   ├── TimeoutError_      connect timeout, or silence longer than the read timeout
    │   │   └── TruncatedError     the body ended before the promised length
    │   ├── HTTPStatusError        an unexpected status code (carries the status and Retry-After)
    │   ├── ProtocolViolation      the server broke the range contract (wrong Content-Range,
    │   │   │                      long or encoded body, ...): nothing it sent is written
    │   │   └── RangeIgnoredError  the server answered a ranged request with the whole file (200)
    │   ├── RemoteChangedError     the remote file changed (validator or size mismatch)
    │   ├── ContentTypeError       the answer's Content-Type is not one of those accepted
    │   ├── TooLargeError          the body is larger than the caller allows (`segdl.fetch`)
    │   └── RedirectError          too many redirects, a loop, a refused scheme or a downgrade
    ├── DestinationError           the local side: exists, permission, not a directory, disk full
    │   └── DiskFullError          ENOSPC / EFBIG / not enough free space
    │       └── InsufficientSpaceError  one file is larger than the free space (refused up front)
    ├── IntegrityError             the finished file failed a checksum or digest check
    ├── Interrupted                stopped by the user (SIGINT/SIGTERM) or a cancel event; resumable
    └── ArchiveError               the archive is corrupt, unsupported or refused: nothing extracted
        ├── CorruptArchiveError    bad headers, CRC or size mismatch, truncation
        ├── UnsupportedArchiveError  not an archive, an unknown compression method, encryption
        │   └── MissingExtraError  the format needs an optional dependency (carries `extra`)
        ├── UnsafeArchiveError     a member broke a safety rule (the message names member and rule)
        └── ArchiveLimitError      a bomb limit: total size, member count or compression ratio

Only `transport` translates requests/urllib3/socket exceptions into this tree.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ArchiveLimitError",
    "ConnectError",
    "ContentTypeError",
    "CorruptArchiveError",
    "DestinationError",
    "DiskFullError",
    "HTTPStatusError",
    "InsufficientSpaceError",
    "IntegrityError",
    "Interrupted",
    "InvalidURLError",
    "MissingExtraError",
    "NameResolutionError",
    "NetworkError",
    "ProtocolViolation",
    "ProxyError",
    "RangeIgnoredError",
    "RedirectError",
    "RefusedError",
    "RemoteChangedError",
    "SegdlError",
    "TLSError",
    "TimeoutError_",
    "TooLargeError",
    "TransferError",
    "TruncatedError",
    "UnsafeArchiveError",
    "UnsupportedArchiveError",
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
    """The connection could not be established or was reset.

    ``answered_before`` is True when the host had answered an earlier request of the same run
    (a download, a batch, a stream): the retry policy is then patient with it.
    """

    def __init__(self, message: str, *, answered_before: bool = False) -> None:
        super().__init__(message)
        self.answered_before = answered_before


class NameResolutionError(ConnectError):
    """The host name does not resolve (DNS): retried only if the host answered in this run."""


class RefusedError(ConnectError):
    """Nothing listens on the host's port: retried once, unless the host answered in this run."""


class ProxyError(ConnectError):
    """The proxy cannot be reached or refused us (credentials, policy): never retried."""


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


class ContentTypeError(TransferError):
    """The answer's Content-Type is not one of those accepted (e.g. an HTML error page)."""


class TooLargeError(TransferError):
    """The body is larger than the caller allows (`segdl.fetch(..., max_size=...)`)."""


class RedirectError(TransferError):
    """A redirect was refused: too many, a loop, a non-http(s) target or a downgrade to http."""


class DestinationError(SegdlError):
    """The destination cannot be written: it exists, is a directory, or permission is denied."""


class DiskFullError(DestinationError):
    """No space left on the destination's file system."""


class InsufficientSpaceError(DiskFullError):
    """One file is larger than the free space, refused before a byte is written: the disk is
    not full, so a batch fails that item and goes on with the others."""


class IntegrityError(SegdlError):
    """The downloaded bytes do not match the expected checksum or the server's digest."""


class Interrupted(SegdlError):
    """The download was stopped by a signal or a cancel request; running it again resumes it."""


class ArchiveError(SegdlError):
    """The archive is corrupt, unsupported or was refused; nothing of it was extracted."""


class CorruptArchiveError(ArchiveError):
    """A bad header, a CRC or size mismatch, or an archive that ends too early."""


class UnsupportedArchiveError(ArchiveError):
    """Not an archive, or one that uses a format feature segdl cannot read."""


class MissingExtraError(UnsupportedArchiveError):
    """The format needs an optional dependency: install segdl with the named extra."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class UnsafeArchiveError(ArchiveError):
    """A member broke a safety rule (path, link, file type); the message names both."""


class ArchiveLimitError(ArchiveError):
    """A bomb limit was reached: total size, number of members or compression ratio."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        # The rule the message names last, in parentheses: the `segdl.extract` keyword that
        # sets the limit ("max_ratio"), or the free space. The command names its option instead.
        self.rule = rule
