"""segdl: download files over several HTTP connections at once, and never a wrong file.

    >>> import segdl
    >>> result = segdl.download("https://example.org/big.iso", connections=16)  # doctest: +SKIP
    >>> results = segdl.download_many(["https://example.org/a.jpg"], "data")  # doctest: +SKIP
    >>> result = segdl.extract("https://example.org/data.zip", "data")  # doctest: +SKIP

Errors derive from `segdl.SegdlError`; progress is observed with a `segdl.Listener`.

Where to start reading. The layers, bottom first; each imports only from its own layer or
below (tests/test_layers.py keeps it so):

- `errors.py` (the exception tree), `_version.py`;
- `core/`: what every job uses. `options.py` (one frozen Options), `urls.py` (Origin,
  check_url), `proxy.py` (which proxy a URL goes through), `retry.py` (the immutable
  RetryPolicy), `http/` (the transport: requests, and kept-alive http.client connections in
  `lean.py`, through a proxy by `tunnel.py`), `fetch.py` (THE seam every request goes
  through: slot, request, retries, 429 reports, stop), `scheduler.py` (slots per host and in
  all, the shared range workers), `limit.py` (speed limits: the token buckets every body read
  is metered by), `probe.py`, `plan.py`, `job.py` (a file's ranges), `sink.py`
  (the .part file, pwrite, O_DIRECT), `control.py` and `state.py` (resume), `verify.py`,
  `naming.py`, `destination.py` (what stands at a path, if-exists), `events.py` (listeners),
  `clock.py`, `units.py`;
- the jobs: `file.py` (one file onto its .part), `stream.py` (ordered bytes through a bounded
  window), then `batch/` (manifests, templates, journal, report, the run) and `archive/`
  (safe extraction from a stream or from zip member ranges), then `cluster/` (a batch on Dask);
- `api.py` (the thin public functions), `bars.py` (tqdm bars) and `progress.py` (the lines
  and JSON reports of `--progress`); on top, `cli/` (one module per command).

The path of one byte: a scheduler worker holds a slot for a range claimed from a file's
`FileRanges`; `fetch.Attempts` sent its ranged GET and checked the 206 before any body byte;
the worker's hot loop `readinto`s one reused page-aligned buffer from the socket and `pwrite`s
it at its offset in the preallocated `.part` (`sink.PartFile`); the control file records it;
once every byte is in and verified, the `.part` is renamed onto the final name. A stream's
pieces go to a bounded window read in order instead (an archive's tar reads that stream), and
a batch item's first GET carries its small file whole.
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
    ProxyError,
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
    "ProxyError",
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
