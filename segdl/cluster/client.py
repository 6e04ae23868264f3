"""The connection to a Dask scheduler: `local:N` (a LocalCluster started here), an address, or
a scheduler file. Dask is imported here, and only when a cluster is asked for: segdl without the
`dask` extra never imports it."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import UsageError
from .errors import ClusterError

EXTRA_HINT = "pip install 'segdl[dask]'"
_LOCAL = re.compile(r"^local:(\d+)$")
MAX_LOCAL_WORKERS = 256


def require_dask() -> Any:
    """The `distributed` module; UsageError naming the extra when it is not installed."""
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise UsageError(
            f"running on a Dask cluster needs Dask distributed: {EXTRA_HINT}"
        ) from None


def check_address(text: str) -> str:
    """`local:N` (N worker processes on this machine) or a scheduler address
    (`tcp://host:8786`, `host:8786`); UsageError otherwise."""
    match = _LOCAL.match(text)
    if match is not None:
        if not 1 <= int(match[1]) <= MAX_LOCAL_WORKERS:
            raise UsageError(f"local:N takes 1 to {MAX_LOCAL_WORKERS} workers")
        return text
    if not text or text.startswith("local") or any(c.isspace() for c in text):
        raise UsageError(f"not a Dask scheduler address: {text!r} (tcp://host:8786 or local:N)")
    return text


@contextlib.contextmanager
def connect(
    address: str | None = None, scheduler_file: str | os.PathLike[str] | None = None
) -> Iterator[Any]:
    """A Dask client for `address` (`local:N` starts a LocalCluster of N one-thread worker
    processes, closed on exit) or for the scheduler that wrote `scheduler_file`."""
    if (address is None) == (scheduler_file is None):
        raise UsageError("give either a Dask scheduler address or a scheduler file")
    distributed = require_dask()
    cluster: Any = None
    try:
        if address is not None and (match := _LOCAL.match(check_address(address))):
            # One thread per worker: segdl's own threads do the I/O, and threads a task
            # starts are invisible to Dask's scheduling.
            dask = importlib.import_module("dask")
            with (
                warnings.catch_warnings(),
                # The statistical profiler samples every thread every 10 ms: useless for I/O,
                # and the trigger of a CPython 3.11 hang (see task._Collector).
                dask.config.set({"distributed.worker.profile.enabled": False}),
            ):
                # Without a dashboard its HTTP server (health checks) still takes port 8787,
                # or another one with a warning when 8787 is taken: not the user's concern.
                warnings.filterwarnings("ignore", "Port .* is already in use", UserWarning)
                cluster = distributed.LocalCluster(
                    n_workers=int(match[1]),
                    processes=True,
                    threads_per_worker=1,
                    dashboard_address=None,
                )
            client = distributed.Client(cluster, set_as_default=False)
        elif address is not None:
            client = distributed.Client(address, set_as_default=False, timeout="15s")
        else:
            assert scheduler_file is not None
            client = distributed.Client(
                scheduler_file=os.fspath(scheduler_file), set_as_default=False, timeout="15s"
            )
    except (OSError, TimeoutError, ValueError, RuntimeError) as exc:  # RuntimeError: a
        # LocalCluster whose workers did not start
        if cluster is not None:
            cluster.close()
        where = address if address is not None else f"the scheduler file {scheduler_file}"
        raise ClusterError(f"cannot reach the Dask scheduler at {where}: {exc}") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # closing what may be broken already
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
