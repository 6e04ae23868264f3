"""The library entry point of cluster batches: `iter_download_cluster`."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..batch.manifest import Item, records_from
from ..batch.results import BatchListener, ItemResult
from ..batch.run import BatchOptions
from ..batch.template import DEFAULT, Template
from ..core.cookies import Cookies
from ..core.options import Options, options_from
from ..core.verify import Checksum
from ..errors import UsageError
from .client import check_address, connect, require_dask
from .driver import Driver


def iter_download_cluster(
    items: Iterable[Item],
    directory: str | os.PathLike[str] | None = None,
    *,
    dask: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    client: Any = None,
    shard_size: int = 10_000,
    jobs: int = 16,
    connections: int = 8,
    max_connections: int | None = None,
    per_host: int = 8,
    template: str = DEFAULT,
    accept: str | Iterable[str] | None = None,
    if_exists: str = "skip",
    journal: bool = True,
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
    listener: BatchListener | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[ItemResult]:
    """`iter_download_many` on a Dask cluster: the items are cut into shards by host and the
    shards run as Dask tasks, each with segdl's batch engine, writing into `directory`, which
    every worker must see at the same path (a shared file system, or one machine).

    Give the cluster as `dask` (`"local:N"` or a scheduler address), `scheduler_file`, or an
    open `distributed.Client` as `client`. `jobs`, `connections` and `max_connections` apply
    to each shard (each worker thread runs one), as do `limit_rate` and `limit_rate_per_host`;
    `per_host` holds for the whole cluster.
    Results stream out as shards finish. A re-run skips finished shards without a request.
    Raises UsageError before anything is fetched, ClusterError when the cluster cannot run
    the batch, Interrupted on `cancel`.
    """
    if sum(x is not None for x in (dask, scheduler_file, client)) != 1:
        raise UsageError("give one of dask=, scheduler_file= or client=")
    if client is None:
        require_dask()
        if dask is not None:
            check_address(dask)
    if not 1 <= shard_size <= 10**9:
        raise UsageError("the shard size must be between 1 and 10^9")
    options = options_from(locals(), sync_each_file=False)
    batch = BatchOptions(
        files_in_flight=jobs,
        max_connections=max_connections,
        per_host=per_host,
        template=Template.parse(template),
        journal=journal,
    )
    folder = Path(directory) if directory is not None else Path.cwd()
    return _run(
        items, folder, options, batch, dask, scheduler_file, client, shard_size, listener, cancel
    )


def _run(
    items: Iterable[Item],
    folder: Path,
    options: Options,
    batch: BatchOptions,
    dask: str | None,
    scheduler_file: str | os.PathLike[str] | None,
    client: Any,
    shard_size: int,
    listener: BatchListener | None,
    cancel: threading.Event | None,
) -> Iterator[ItemResult]:
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(connect(dask, scheduler_file))
        driver = Driver(
            client,
            folder,
            options,
            batch,
            shard_size=shard_size,
            listener=listener,
            cancel=cancel,
        )
        yield from driver.run(records_from(items))
