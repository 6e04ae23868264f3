"""The task: one shard, run in a Dask worker with segdl's own batch engine.

Dask runs a task at least once, not exactly once, so a task is written to be run again, or
twice at the same time, without harm:

- it first checks that it sees the run's DIR (the run file holds the driver's run id): a
  worker that sees no such file is on a machine without the shared DIR, and fails the task
  before it writes anything;
- it holds `task.lock` of its shard while it runs: a second attempt of the same shard (its
  first worker cut off but not dead) waits for the first to end;
- the shard's journal makes a new attempt skip, without a request, what an earlier one
  finished; files are written under `.part` names and renamed when complete, as always;
- when a destination can come from an answer (`{name}`), every destination is also claimed
  in `DIR/.segdl/cluster/claims/<run>/`, so that items of two shards that resolve to the same
  path are refused as in one local batch, instead of writing one file from two processes
  (otherwise the driver has settled every path before any request);
- a watcher stops the task when the run file changes (the driver stopped, or a newer run
  started), so that a task orphaned by a killed driver does not outlive it for long;
- the marker `done.jsonl` (every row and a summary) is written last, in one rename.

Progress goes to the driver as small events (`Worker.log_event` on the run's topic, once a
second per shard: items, bytes, failures), never per file. No file bytes go to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..batch.manifest import Record
from ..batch.results import BatchListener, ItemResult
from ..batch.run import Batch, BatchOptions
from ..core.options import Options
from ..errors import DestinationError, Interrupted
from .errors import DirectoryNotShared, ShardBusy, Superseded
from .shards import (
    Row,
    Shard,
    SharedClaims,
    claims_dir,
    encode_row,
    read_shard,
    read_text,
    run_file,
    shard_dir,
    summarize,
    try_lock,
    write_marker,
)

_WATCH = 0.5  # seconds between two looks at the run file
_PROGRESS = 1.0  # seconds between two progress events of one shard


@dataclass(frozen=True)
class ShardSpec:
    """Everything a task needs, sent with it (small: no items, no bytes)."""

    directory: str  # absolute
    run: str
    shard: Shard
    token: str  # this submission's id (the progress events carry it)
    options: Options
    batch: BatchOptions  # per_host is the shard's share of the host budget
    topic: str | None  # the progress topic, None for none
    claims: bool = True  # claim destinations run-wide (see SharedClaims)
    lock_wait: float = 30.0


def where(worker: Any = None) -> str:
    """This worker, for messages: its Dask address when there is one, and the machine."""
    host = socket.gethostname()
    if worker is None:
        try:
            worker = importlib.import_module("distributed").get_worker()
        except (ImportError, ValueError):
            return f"pid {os.getpid()} on {host}"
    return f"{worker.address} on {host}"


def check_directory(directory: str, run: str, worker: Any = None) -> str | None:
    """None when this process sees `directory` as the driver does, else why not (one line).

    Run on every worker before the first shard (`Client.run`), and by every task.
    """
    path = Path(directory)
    text = read_text(run_file(path))
    if text is None:
        return (
            f"worker {where(worker)} cannot see the download directory {directory} "
            "(give a path every worker sees: a shared file system, or one machine)"
        )
    if text.strip() != run:
        return f"the run that sent this task is over ({directory} has another run now)"
    return None


def probe(directory: str, run: str, version: str, dask_worker: Any = None) -> str | None:
    """`check_directory`, and that this worker runs the driver's version of segdl (run with
    `Client.run`, which passes the worker as `dask_worker`)."""
    from .._version import __version__

    if version != __version__:
        return f"worker {where(dask_worker)} runs segdl {__version__}, the driver {version}"
    return check_directory(directory, run, dask_worker)


def _check(directory: str, run: str) -> None:
    problem = check_directory(directory, run)
    if problem is None:
        return
    if problem.startswith("worker "):
        raise DirectoryNotShared(problem)
    raise Superseded(problem)


class _Collector:
    """Garbage collection in the task's thread only, while shards run (Python < 3.12).

    Dask's worker profiler calls `sys._current_frames()` every 10 ms. On CPython 3.11 that
    call holds the thread-list lock while it allocates; an allocation may start the cyclic
    collector, and if it then frees a `threading.local` (each batch's connections have one,
    in a reference cycle) the collector takes the same lock again: the worker process hangs
    for good (CPython gh-106883, fixed in 3.12). So while shards run, the automatic collector
    is off and the task's own thread collects instead, a few times a second, whatever
    generation is over its threshold, and everything a shard left behind before the
    automatic collector is back: the same collections, never inside `_current_frames`.

    What the worker held before the first shard is frozen meanwhile (`gc.freeze`): a Dask
    worker's heap is large, and a shard's collections need only look at its own objects.
    """

    _lock = threading.Lock()
    _users = 0
    _was_enabled = False
    needed = sys.version_info < (3, 12)

    def __enter__(self) -> _Collector:
        if self.needed:
            with _Collector._lock:
                if _Collector._users == 0:
                    _Collector._was_enabled = gc.isenabled()
                    gc.disable()
                    gc.freeze()
                _Collector._users += 1
        return self

    def step(self) -> None:
        if not self.needed:
            return
        counts, thresholds = gc.get_count(), gc.get_threshold()
        for generation in (2, 1, 0):
            if thresholds[generation] and counts[generation] >= thresholds[generation]:
                gc.collect(generation)
                return

    def __exit__(self, *exc: object) -> None:
        if self.needed:
            with _Collector._lock:
                _Collector._users -= 1
                if _Collector._users == 0:
                    gc.collect()  # the shard's garbage only: the rest is frozen
                    gc.unfreeze()
                    if _Collector._was_enabled:
                        gc.enable()


class _Progress(BatchListener):
    """Sends the shard's progress to the driver once a second, and warnings as they come."""

    def __init__(self, spec: ShardSpec, log: Any, collector: _Collector) -> None:
        self._collector = collector
        self._token = spec.token
        self._topic = spec.topic
        self._log = log
        self._next = 0.0
        self._worker: Any = None
        if self._topic is not None:
            try:
                self._worker = importlib.import_module("distributed").get_worker()
            except (ImportError, ValueError):
                self._worker = None

    def _emit(self, message: dict[str, Any]) -> None:
        if self._worker is not None:
            with contextlib.suppress(Exception):  # progress is best effort, never fatal
                self._worker.log_event(self._topic, message)

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        self._log.flush()  # a few times a second: what a dead attempt leaves to the driver
        self._collector.step()
        now = time.monotonic()
        if now >= self._next:
            self._next = now + _PROGRESS
            message = {"k": self._token, "i": items, "b": done, "f": failed, "c": connections}
            self._emit(message)

    def warning(self, message: str) -> None:
        self._emit({"k": self._token, "w": message})


class _Watcher(threading.Thread):
    """Sets `cancel` when the run file no longer names this run."""

    def __init__(self, directory: str, run: str, cancel: threading.Event) -> None:
        super().__init__(name="segdl-run-watch", daemon=True)
        self.directory = directory
        self.run_id = run
        self.cancel = cancel
        self.stop = threading.Event()
        self.fired = False

    def run(self) -> None:
        while not self.stop.wait(_WATCH):
            if check_directory(self.directory, self.run_id) is not None:
                self.fired = True
                self.cancel.set()
                return


def to_row(result: ItemResult, directory: Path) -> Row:
    path = result.relative_path(directory)
    engine = None
    if result.result is not None:
        r = result.result
        engine = (
            r.final_url,
            r.elapsed,
            r.connections,
            r.fetched,
            r.resumed,
            r.segmented,
            tuple(r.warnings),
        )
    return Row(
        result.index,
        result.url,
        path,
        result.status,
        result.http_status,
        result.size,
        result.seconds,
        result.attempts,
        result.error,
        engine,
    )


def _lock_shard(spec: ShardSpec, folder: Path) -> int:
    deadline = time.monotonic() + spec.lock_wait
    while True:
        fd = try_lock(folder / "task.lock")
        if fd is not None:
            return fd
        _check(spec.directory, spec.run)
        if time.monotonic() > deadline:
            raise ShardBusy(
                f"shard {spec.shard.id} is still held by another attempt after {spec.lock_wait:g} s"
            )
        time.sleep(0.2)


def run_shard(spec: ShardSpec) -> tuple[dict[str, Any], list[Row]]:
    """Run one shard; returns its summary and one row per item (also written to the marker).

    Raises DirectoryNotShared when this worker does not see DIR, Superseded when the run is
    over, ShardBusy when another attempt holds the shard too long.
    """
    started = time.monotonic()
    _check(spec.directory, spec.run)
    directory = Path(spec.directory)
    folder = shard_dir(directory, spec.shard.id)
    fd = _lock_shard(spec, folder)
    cancel = threading.Event()
    watcher = _Watcher(spec.directory, spec.run, cancel)
    try:
        try:
            records = read_shard(directory, spec.shard.id, spec.shard.digest)
        except (OSError, ValueError) as exc:
            raise DestinationError(f"cannot read shard {spec.shard.id}: {exc}") from None
        if records is None:
            raise Superseded(f"shard {spec.shard.id} was rewritten by another run")
        watcher.start()
        with (
            open(folder / "results.jsonl", "w", encoding="ascii") as log,
            _Collector() as collector,
        ):
            try:
                rows = _run(spec, records, log, collector, cancel)
            except Interrupted:
                if watcher.fired:
                    raise Superseded(f"shard {spec.shard.id} stopped: the run is over") from None
                raise
        summary = summarize(
            spec.shard, rows, worker=where(), seconds=round(time.monotonic() - started, 3)
        )
        write_marker(directory, summary, rows)
        with contextlib.suppress(OSError):  # the marker holds every row now
            os.unlink(folder / "results.jsonl")
        return summary, rows
    finally:
        watcher.stop.set()
        os.close(fd)


def _run(
    spec: ShardSpec,
    records: list[Record],
    log: IO[str],
    collector: _Collector,
    cancel: threading.Event,
) -> list[Row]:
    """The shard's batch; every row is also logged as it comes (for a dead attempt)."""
    directory = Path(spec.directory)
    folder = shard_dir(directory, spec.shard.id)
    batch = dataclasses.replace(
        spec.batch, journal_path=folder / "journal.sqlite3" if spec.batch.journal else None
    )
    rows: list[Row] = []
    runner: Batch | None = Batch(
        directory,
        spec.options,
        batch,
        listener=_Progress(spec, log, collector),
        cancel=cancel,
        shared=SharedClaims(claims_dir(directory, spec.run)) if spec.claims else None,
    )
    try:
        assert runner is not None
        for result in runner.run(records):
            row = to_row(result, directory)
            rows.append(row)
            log.write(encode_row(row) + "\n")
    except BaseException as exc:
        # The batch (and its thread-local connections) must go now, with the collector paused,
        # not later with a traceback that Dask keeps (see _Collector).
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        runner = None
    return rows
