"""The library entry points: `download(url, dest, ...)` -> `Result`, and
`download_many(items, directory, ...)` -> one `ItemResult` per item.

Options in, destination chosen (and existing files respected), engine or batch run, result
out. It knows no HTTP details: probing and transfers are the engine's and the transport's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

from .archive.remote import ExtractListener
from .batch.manifest import BadRecord, Record
from .batch.results import BatchListener, ItemResult
from .batch.run import BatchOptions, BatchResults, run_batch
from .batch.template import DEFAULT, Template
from .core.clock import Clock
from .core.events import TransferListener
from .core.http.transport import Transport
from .core.naming import MAX_NAME_BYTES, derive_filename
from .core.options import Options, parse_accept
from .core.probe import RemoteInfo
from .core.sink import CONTROL_SUFFIX, PART_SUFFIX, destination_error
from .core.urls import check_url
from .core.verify import Checksum
from .errors import DestinationError, InvalidURLError, UsageError
from .file import Engine, Result, free_name
from .stream import WINDOW_DEFAULT, RemoteFile, open_remote, read_limited

# Room for the companion files ("<name>.part", "<name>.segdl") within NAME_MAX.
_COMPANION_ROOM = max(len(PART_SUFFIX), len(CONTROL_SUFFIX))


class Listener(BatchListener, ExtractListener):
    """Receives every event segdl sends: a transfer's, a batch's and an extraction's (see
    `segdl.core.events`); subclass it and override what you need. All methods are no-ops."""


def download(
    url: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
    connections: int = 8,
    min_split: int = Options.min_split,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    timeout: float = Options.timeout,
    connect_timeout: float = Options.connect_timeout,
    retries: int = Options.retries,
    resume: bool = True,
    if_exists: str = "error",
    checksum: str | Checksum | None = None,
    verify: bool | str = True,
    max_redirects: int = Options.max_redirects,
    location_trusted: bool = False,
    allow_downgrade: bool = False,
    trust_env: bool = True,
    direct_io: bool = True,
    buffer_size: int = Options.buffer_size,
    save_interval: float = Options.save_interval,
    listener: TransferListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
) -> Result:
    """Download `url` to `dest` (a file path) or into `directory` under the server's name.

    Raises a `segdl.SegdlError` subclass on failure; no file is ever left under the final
    name unless every byte arrived and checked out.
    """
    check_url(url)
    if dest is not None and directory is not None:
        raise UsageError("give either a destination file or a directory, not both")
    options = _options(
        connections=connections,
        min_split=min_split,
        buffer_size=buffer_size,
        headers=headers,
        connect_timeout=connect_timeout,
        timeout=timeout,
        retries=retries,
        resume=resume,
        if_exists=if_exists,
        checksum=checksum,
        save_interval=save_interval,
        verify=verify,
        max_redirects=max_redirects,
        location_trusted=location_trusted,
        allow_downgrade=allow_downgrade,
        trust_env=trust_env,
        direct_io=direct_io,
    )
    listener = listener or TransferListener()
    target = _target(dest, directory)
    transport = Transport(url, options.transport())
    engine = Engine(transport, options, listener, cancel=cancel, clock=clock)
    try:
        info = engine.probe(url)
        final = _final_path(target, info)
        existing = _existing(final, options.if_exists)
        if existing is not None:
            return _skipped(existing, info)
        if options.if_exists == "rename" and _taken(final):
            final = free_name(final)
        return engine.run(info, final)
    finally:
        transport.close()


def _options(
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    verify: bool | str,
    checksum: str | Checksum | None,
    accept: str | Iterable[str] | None = None,
    **fields: Any,
) -> Options:
    """The validated `Options` from the keyword arguments the public functions take."""
    if isinstance(verify, str) and not os.path.isfile(verify):
        raise UsageError(f"CA certificate file not found: {verify}")
    if isinstance(checksum, str):
        checksum = Checksum.parse(checksum)
    header_items = tuple(headers.items() if isinstance(headers, Mapping) else headers or ())
    if isinstance(accept, str):
        patterns = parse_accept(accept)
    else:
        patterns = parse_accept(",".join(accept or ()))
    return Options(
        headers=header_items, verify=verify, checksum=checksum, accept=patterns, **fields
    )


Item: TypeAlias = str | tuple[str, str] | Mapping[str, Any] | Record | BadRecord


def download_many(
    items: Iterable[Item],
    directory: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> list[ItemResult]:
    """Download every item into `directory` (default: the current one); one result per item,
    in the order they finished. Takes the keyword arguments of `iter_download_many`.

    One failed item never raises: it is a result with status "failed".
    """
    return list(iter_download_many(items, directory, **kwargs))


def iter_download_many(
    items: Iterable[Item],
    directory: str | os.PathLike[str] | None = None,
    *,
    jobs: int = 16,
    connections: int = 8,
    max_connections: int | None = None,
    per_host: int = 8,
    template: str = DEFAULT,
    accept: str | Iterable[str] | None = None,
    if_exists: str = "skip",
    journal: bool | str | os.PathLike[str] = True,
    min_split: int = Options.min_split,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    timeout: float = Options.timeout,
    connect_timeout: float = Options.connect_timeout,
    retries: int = Options.retries,
    resume: bool = True,
    checksum: str | Checksum | None = None,
    verify: bool | str = True,
    max_redirects: int = Options.max_redirects,
    location_trusted: bool = False,
    allow_downgrade: bool = False,
    trust_env: bool = True,
    direct_io: bool = True,
    buffer_size: int = Options.buffer_size,
    save_interval: float = Options.save_interval,
    listener: BatchListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
) -> BatchResults:
    """Download many files over one shared pool of connections; yields each item's result as
    it finishes (for callers with millions of items). The batch runs while the results are
    read, a few ahead at most; `close()` them (or use them in a `with` block) to stop it
    early.

    `items` are URLs, `(url, relative_path)` pairs, mappings (`{"url": ..., "path": ...}`,
    where "url" may be a list of mirrors and the other keys are fields for `template`), or
    the records of `read_manifest`. `template` names each file relative to `directory` from
    the item's fields and `{name}`, `{stem}`, `{ext}`, `{index}`. `jobs` files are fetched at
    once, each over up to `connections` connections, with at most `per_host` connections to
    one host and `max_connections` in all. A journal in `directory/.segdl/` makes a re-run
    skip finished items without a request (`journal` may also be the journal's path, or False
    for none). Raises `Interrupted` when `cancel` is set (run it again to resume),
    `DiskFullError` when the disk fills up (the batch stops there; run it again once there is
    room), and UsageError for bad options, before anything is fetched.
    """
    options = _options(
        connections=connections,
        min_split=min_split,
        buffer_size=buffer_size,
        headers=headers,
        connect_timeout=connect_timeout,
        timeout=timeout,
        retries=retries,
        resume=resume,
        if_exists=if_exists,
        checksum=checksum,
        save_interval=save_interval,
        verify=verify,
        max_redirects=max_redirects,
        location_trusted=location_trusted,
        allow_downgrade=allow_downgrade,
        trust_env=trust_env,
        direct_io=direct_io,
        accept=accept,
        sync_each_file=False,
    )
    batch = BatchOptions(
        jobs=jobs,
        max_connections=max_connections,
        per_host=per_host,
        template=Template.parse(template),
        journal=journal is not False,
        journal_path=None if isinstance(journal, bool) else Path(journal),
    )
    folder = Path(directory) if directory is not None else Path.cwd()
    return run_batch(
        _records(items), folder, options, batch, listener=listener, cancel=cancel, clock=clock
    )


def _records(items: Iterable[Item]) -> Iterator[Record | BadRecord]:
    """The library's item forms as manifest records (bad ones become failed items)."""
    for index, item in enumerate(items):
        if isinstance(item, Record | BadRecord):
            yield item
            continue
        try:
            yield _record(index, item)
        except (InvalidURLError, TypeError, ValueError) as exc:
            yield BadRecord(index, index + 1, f"item {index}: {exc}")


def _record(index: int, item: str | tuple[str, str] | Mapping[str, Any]) -> Record:
    out: str | None = None
    fields: dict[str, str] = {}
    if isinstance(item, str):
        urls: tuple[str, ...] = (item,)
    elif isinstance(item, tuple):
        url, path = item
        urls, out = (url,), str(path)
    elif isinstance(item, Mapping):
        value = item.get("url")
        if isinstance(value, str):
            urls = (value,)
        elif isinstance(value, list | tuple) and value and all(isinstance(u, str) for u in value):
            urls = tuple(value)
        else:
            raise ValueError("no 'url' (a string or a list of mirror URLs)")
        if item.get("path") is not None:
            out = str(item["path"])
        fields = {
            str(k): str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in item.items()
            if isinstance(v, str | int | float | bool) and k != "path"
        }
    else:
        raise TypeError(f"unsupported item type {type(item).__name__}")
    urls = tuple(check_url(u.strip()) for u in urls)
    fields.setdefault("url", urls[0])
    return Record(index, index + 1, urls, fields, out=out)


def open(
    url: str,
    *,
    connections: int = 8,
    window: int = WINDOW_DEFAULT,
    min_split: int = Options.min_split,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    timeout: float = Options.timeout,
    connect_timeout: float = Options.connect_timeout,
    retries: int = Options.retries,
    checksum: str | Checksum | None = None,
    verify: bool | str = True,
    max_redirects: int = Options.max_redirects,
    location_trusted: bool = False,
    allow_downgrade: bool = False,
    trust_env: bool = True,
    listener: TransferListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
) -> RemoteFile:
    """Open `url` as a binary file object read in order over `connections` connections.

    At most `window` bytes are fetched ahead of the reader (memory stays within the window
    plus a piece per connection); `seek` works everywhere (without ranges, a seek back
    starts a plain GET again from byte 0). `checksum` and the server's digest are checked
    when the end is read from the start in order. Close it (or use `with`) to stop every
    connection. Errors derive from `segdl.SegdlError`.
    """
    check_url(url)
    if window < 1:
        raise UsageError("the window must be at least 1 byte")
    options = _options(
        connections=connections,
        min_split=min_split,
        headers=headers,
        connect_timeout=connect_timeout,
        timeout=timeout,
        retries=retries,
        checksum=checksum,
        verify=verify,
        max_redirects=max_redirects,
        location_trusted=location_trusted,
        allow_downgrade=allow_downgrade,
        trust_env=trust_env,
    )
    transport = Transport(url, options.transport())
    try:
        return open_remote(
            transport, options, window=window, listener=listener, clock=clock, cancel=cancel
        )
    except BaseException:
        transport.close()
        raise


def fetch(url: str, *, max_size: int = 256 << 20, **kwargs: Any) -> bytes:
    """The whole body of `url` as bytes, for small things (an image, a JSON manifest).

    Refuses a body larger than `max_size` (by its announced size before reading, or mid-way)
    with `TooLargeError`. Takes the keyword arguments of `open`.
    """
    if max_size < 0:
        raise UsageError("max_size must be >= 0")
    with open(url, **kwargs) as remote:
        return read_limited(remote, max_size)


class _Target:
    """Where the user asked the file to go: an exact file, or a directory."""

    def __init__(self, file: Path | None, directory: Path | None) -> None:
        self.file = file
        self.directory = directory


def _target(
    dest: str | os.PathLike[str] | None, directory: str | os.PathLike[str] | None
) -> _Target:
    if dest is not None:
        path = Path(dest)
        if path.is_dir():
            raise DestinationError(f"{path} is a directory (give a file name, or use a directory)")
        # Missing folders are created for a file as for a directory (as aria2c does).
        _make_folder(path.parent)
        return _Target(path, None)
    folder = Path(directory) if directory is not None else Path.cwd()
    _make_folder(folder)
    return _Target(None, folder)


def _make_folder(folder: Path) -> None:
    """`folder` and its missing parents, created. Only what is missing is made, one mkdir
    each, and mkdir never follows a link at the name it creates: nothing is created through
    a link planted where a new folder goes (a dangling one is refused, not followed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        # The part of the path that stands in the way (a file, a dangling link).
        blocker = exc.filename or folder
        raise DestinationError(f"{blocker} exists and is not a directory") from None
    except OSError as exc:
        raise destination_error(exc, folder, "create directory") from None
    if not folder.is_dir():
        raise DestinationError(f"{folder} exists and is not a directory")


def _final_path(target: _Target, info: RemoteInfo) -> Path:
    if target.file is not None:
        return target.file
    assert target.directory is not None
    name = derive_filename(
        info.url, info.content_disposition, max_bytes=MAX_NAME_BYTES - _COMPANION_ROOM
    )
    return target.directory / name


def _taken(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _existing(final: Path, policy: str) -> Path | None:
    """Apply the if-exists policy; returns the path to report as skipped, or None to go on."""
    if not _taken(final):
        return None
    if final.is_dir() and not final.is_symlink():
        raise DestinationError(f"{final} is a directory")
    if policy == "error":
        raise DestinationError(
            f"{final} already exists (use --overwrite, --if-exists skip or --if-exists rename)"
        )
    if policy == "skip":
        return final
    return None  # overwrite (os.replace replaces a link, never writes through it) or rename


def _skipped(path: Path, info: RemoteInfo) -> Result:
    return Result(
        path=path,
        url=info.url,
        final_url=info.final_url,
        size=path.stat().st_size if path.exists() else 0,
        elapsed=0.0,
        connections=0,
        fetched=0,
        resumed=0,
        segmented=False,
        skipped=True,
    )
