"""The library entry points: `download(url, dest, ...)` -> `Result`, and
`download_many(items, directory, ...)` -> one `ItemResult` per item.

Options in, destination chosen (and existing files respected), engine or batch run, result
out. It knows no HTTP details: probing and transfers are the engine's and the transport's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .archive.remote import ExtractListener
from .batch.manifest import Item, records_from
from .batch.results import BatchListener, ItemResult
from .batch.run import BatchOptions, BatchResults, run_batch
from .batch.template import DEFAULT, Template
from .core.clock import Clock
from .core.cookies import Cookies
from .core.destination import Target
from .core.events import TransferListener
from .core.http import open_transport
from .core.options import Options, options_from
from .core.urls import check_url
from .core.verify import Checksum, read_checksums
from .errors import UsageError
from .file import Result, download_file
from .stream import WINDOW_DEFAULT, RemoteFile, open_remote, read_limited


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
    transport: str = Options.transport,
    http_version: str = Options.http_version,
    streams: int = Options.streams,
    proxy: str | None = None,
    noproxy: str | Iterable[str] | None = None,
    limit_rate: int | str | None = None,
    limit_rate_per_host: int | str | None = None,
    direct_io: bool = True,
    buffer_size: int = Options.buffer_size,
    save_interval: float = Options.save_interval,
    user_agent: str | None = None,
    cookies: str | Cookies | None = None,
    load_cookies: str | os.PathLike[str] | None = None,
    listener: TransferListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
) -> Result:
    """Download `url` to `dest` (a file path) or into `directory` under the server's name.

    `limit_rate` caps the bytes per second of every connection together, and
    `limit_rate_per_host` those from each host (a number, or a text such as `"500K"` or
    `"20M"`, with 1024 multiples); every connection keeps moving under a low limit.
    Raises a `segdl.SegdlError` subclass on failure; no file is ever left under the final
    name unless every byte arrived and checked out.

    `user_agent` replaces segdl's own (`segdl/VERSION`). `cookies` (`"name=value; ..."`, as
    curl's `-b`) go to the origin of `url` only; `load_cookies` names a Netscape cookie file
    (curl's, wget's, aria2c's) whose cookies go to the domains and paths they belong to.
    `proxy` (`http://`, `https://`, `socks5://` or `socks5h://`, credentials in the URL)
    carries every request to a host that `noproxy` (curl's `--noproxy` list) does not name;
    without it, the environment's proxies apply unless `trust_env` is False.
    """
    arguments = locals()
    check_url(url)
    if dest is not None and directory is not None:
        raise UsageError("give either a destination file or a directory, not both")
    options = options_from(arguments)
    target = Target.of(dest, directory)
    return download_file(
        url, target, options, listener or TransferListener(), cancel=cancel, clock=clock
    )


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
    transport: str = Options.transport,
    http_version: str = Options.http_version,
    streams: int = Options.streams,
    proxy: str | None = None,
    noproxy: str | Iterable[str] | None = None,
    limit_rate: int | str | None = None,
    limit_rate_per_host: int | str | None = None,
    direct_io: bool = True,
    buffer_size: int = Options.buffer_size,
    save_interval: float = Options.save_interval,
    user_agent: str | None = None,
    cookies: str | Cookies | None = None,
    load_cookies: str | os.PathLike[str] | None = None,
    checksums: str | os.PathLike[str] | Mapping[str, Checksum] | None = None,
    listener: BatchListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    count: Callable[[threading.Event], int | None] | None = None,
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
    for none). `limit_rate` and `limit_rate_per_host` (as for `download`) hold for the whole
    batch: every connection of every file shares them. Raises `Interrupted` when `cancel`
    is set (run it again to resume),
    `DiskFullError` when the disk fills up (the batch stops there; run it again once there is
    room), and UsageError for bad options, before anything is fetched.

    Each file's bytes must match its digest, when it has one: the record's (`read_manifest`'s
    `checksum_field`, an aria2 `checksum=` line), else its line in `checksums` (a
    `sha256sum`/`md5sum`-format file, or a mapping, by path relative to `directory`), else
    `checksum`. A file that does not match is a failed item and is not kept. The journal
    skips a finished item only if it was verified against the digest asked for now.
    `user_agent`, `cookies` and `load_cookies` are `download`'s.
    `count(stop)` counts the items quickly in a thread beside the batch (None if `stop` is
    set first), so that `listener.batch_progress` has a total before the items are all read:
    `lambda stop: segdl.batch.manifest.count_records(path, stop=stop)` for a manifest file.
    """
    options = options_from(locals(), sync_each_file=False)
    if checksums is not None and not isinstance(checksums, Mapping):
        checksums = read_checksums(checksums)
    batch = BatchOptions(
        files_in_flight=jobs,
        max_connections=max_connections,
        per_host=per_host,
        template=Template.parse(template),
        journal=journal is not False,
        journal_path=None if isinstance(journal, bool) else Path(journal),
        checksums=checksums,
    )
    folder = Path(directory) if directory is not None else Path.cwd()
    return run_batch(
        records_from(items),
        folder,
        options,
        batch,
        listener=listener,
        cancel=cancel,
        clock=clock,
        count=count,
    )


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
    transport: str = Options.transport,
    http_version: str = Options.http_version,
    streams: int = Options.streams,
    user_agent: str | None = None,
    cookies: str | Cookies | None = None,
    load_cookies: str | os.PathLike[str] | None = None,
    proxy: str | None = None,
    noproxy: str | Iterable[str] | None = None,
    limit_rate: int | str | None = None,
    limit_rate_per_host: int | str | None = None,
    listener: TransferListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
) -> RemoteFile:
    """Open `url` as a binary file object read in order over `connections` connections.

    At most `window` bytes are fetched ahead of the reader (memory stays within the window
    plus a piece per connection); `seek` works everywhere (without ranges, a seek back
    starts a plain GET again from byte 0). `checksum` and the server's digest are checked
    when the end is read from the start in order. `limit_rate` and `limit_rate_per_host` are
    `download`'s. Close it (or use `with`) to stop every connection. Errors derive from
    `segdl.SegdlError`.
    """
    arguments = locals()
    check_url(url)
    if window < 1:
        raise UsageError("the window must be at least 1 byte")
    options = options_from(arguments)
    remote = open_transport(url, options)
    try:
        return open_remote(
            remote, options, window=window, listener=listener, clock=clock, cancel=cancel
        )
    except BaseException:
        remote.close()
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
