"""The driver: streams the manifest into shards, keeps a bounded number of shards running on
the cluster, and turns their rows back into one `ItemResult` per item.

Threads: a *feeder* reads the records (never all at once), names and claims what can be named
before any request (duplicates and conflicts are settled here, in input order, as a local
batch does), writes the shard files and says which shards are ready (a shard whose marker
is there, clean, and whose files are all in place is not run again: its items are reported
skipped). The caller's thread submits ready shards, collects finished ones through
`as_completed`, releasing each future once read, and samples progress.

Politeness across machines: every host is in exactly one group (`host_group`), and the
driver never has more shards of one group in flight than their per-host shares allow: each
shard runs with `per_host = P // k` (P = --per-host, k = min(P, worker threads)), and a
group's running shards never hold more than P in all. So one host never sees more than P
connections from the whole cluster, however many workers run its shards.

Faults: a worker that dies makes Dask run its shard again elsewhere (the shard's lock, its
journal and the run-wide claims make that harmless); a shard whose workers keep dying (Dask's
`KilledWorker`, after `distributed.scheduler.allowed-failures`) ends as failed items, the rows
its last attempt logged kept; the other shards go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..batch.manifest import BadRecord, Record
from ..batch.results import BatchListener, ItemResult
from ..batch.run import BatchOptions
from ..core.options import Options
from ..core.scheduler import Stop
from ..errors import DestinationError, Interrupted
from ..file import Result
from .client import require_dask
from .errors import ClusterError, DirectoryNotShared, ShardBusy, Superseded
from .feeder import Feeder
from .shards import (
    Row,
    Shard,
    SharedClaims,
    claims_dir,
    cluster_dir,
    iter_shard_indexes,
    read_partial,
    run_file,
    segdl_dir,
    try_lock,
    write_atomic,
)
from .task import ShardSpec, probe, run_shard

_TICK = 0.2  # progress is sampled this often
_POLL = 0.2  # the longest the caller's thread waits (a finished shard wakes it at once)
_BACKLOG = 4096  # events the feeder may queue ahead of the caller's thread
_RESUBMITS = 3  # a shard busy elsewhere or cancelled by the cluster is tried this many times


@dataclass
class _Flight:
    shard: Shard
    future: Any
    token: str
    share: int
    tries: int


class Driver:
    """One run of a batch on a Dask cluster; `run(records)` yields results as shards finish."""

    def __init__(
        self,
        client: Any,
        directory: Path,
        options: Options,
        batch: BatchOptions,
        *,
        shard_size: int = 10_000,
        listener: BatchListener | None = None,
        cancel: threading.Event | None = None,
        lock_wait: float = 30.0,
    ) -> None:
        if shard_size < 1:
            raise ClusterError("the shard size must be at least 1")
        self.client = client
        self.directory = directory  # as given: results are reported under it
        self.root = Path(os.path.abspath(directory))  # what the workers are sent
        self.options = options
        self.batch = batch
        self.shard_size = shard_size
        self.listener = listener or BatchListener()
        self.cancel = cancel
        self.lock_wait = lock_wait
        self.run_id = uuid.uuid4().hex
        self.topic = f"segdl-progress-{self.run_id}"
        self.total: int | None = None
        # Unbounded, so that a finished future's callback (on Dask's event loop) never waits;
        # the feeder holds back by itself beyond _BACKLOG.
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._live: dict[str, tuple[int, int, int, int]] = {}  # token -> items, bytes, failed, c
        self._warnings: deque[str] = deque(maxlen=1000)
        self._live_lock = threading.Lock()
        self._done = {"ok": 0, "skipped": 0, "failed": 0}
        self._bytes = 0
        self._threads = 0
        self._threads_at = 0.0

    # -- the caller's thread -------------------------------------------------------------------
    def run(self, records: Iterable[Record | BadRecord]) -> Iterator[ItemResult]:
        """Yield one result per item; raises Interrupted on cancel or Ctrl-C (run it again to
        resume), DirectoryNotShared when a worker does not see the directory."""
        lock = self._start()
        feeder = Feeder(
            records,
            self.root,
            self.directory,
            self.batch.template,
            self.shard_size,
            self._put,
            SharedClaims(claims_dir(self.root, self.run_id)),
        )
        self._feeder = feeder
        inflight: dict[str, _Flight] = {}
        try:
            self._check_workers()
            self.client.subscribe_topic(self.topic, self._on_event)
            feeder.start()
            yield from self._loop(inflight)
        except (OSError, TimeoutError) as exc:  # the scheduler is gone (CommClosedError, ...)
            raise ClusterError(f"lost the Dask scheduler: {type(exc).__name__}: {exc}") from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted; run the same command again to resume") from None
        finally:
            self._stop.set()
            feeder.stop.set()
            # Running tasks see the run file change and stop within a second; a LocalCluster
            # is closed by the caller anyway.
            with contextlib.suppress(DestinationError):
                write_atomic(run_file(self.root), f"over {self.run_id}\n".encode())
            if inflight:
                with contextlib.suppress(Exception):  # the cluster may be gone already
                    self.client.cancel([f.future for f in inflight.values()])
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.topic)
            if feeder.ident is not None:
                feeder.join(timeout=5.0)
            self._discard(claims_dir(self.root, self.run_id))
            self._sweep()
            os.close(lock)
            self._tick(final=True)

    def _start(self) -> int:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            cluster_dir(self.root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create directory {self.root}: {exc.strerror}") from None
        lock = try_lock(segdl_dir(self.root) / "lock")
        if lock is None:
            raise DestinationError(f"another segdl run is using {self.directory}")
        try:
            # Claims of earlier runs mean nothing now (and their tasks are told to stop).
            claims = cluster_dir(self.root) / "claims"
            for old in claims.iterdir() if claims.is_dir() else ():
                self._discard(old)
            self._sweep()  # and what an earlier run left to delete
            claims_dir(self.root, self.run_id).mkdir(parents=True)
            write_atomic(run_file(self.root), f"{self.run_id}\n".encode(), sync=True)
        except OSError as exc:
            os.close(lock)
            raise DestinationError(f"cannot prepare {cluster_dir(self.root)}: {exc}") from None
        except BaseException:
            os.close(lock)
            raise
        return lock

    def _discard(self, folder: Path) -> None:
        """Move `folder` (a run's claims: one link per file) to the trash, for `_sweep`."""
        trash = cluster_dir(self.root) / "trash"
        with contextlib.suppress(OSError):
            trash.mkdir(exist_ok=True)
            os.rename(folder, trash / f"{folder.name}-{uuid.uuid4().hex[:8]}")

    def _sweep(self) -> None:
        """Empty the trash in the background: deleting a million links takes a while, and
        the run need not wait for it. A sweep cut short by the end of the process is
        finished by the next run."""
        trash = cluster_dir(self.root) / "trash"
        if trash.is_dir():
            threading.Thread(
                target=shutil.rmtree,
                args=(trash,),
                kwargs={"ignore_errors": True},
                name="segdl-claims-cleanup",
                daemon=True,
            ).start()

    def _check_workers(self) -> None:
        """Every worker must see DIR as the driver does (each task checks it again)."""
        if self._worker_threads() == 0:
            try:
                self.client.wait_for_workers(1, timeout=60)
            except (TimeoutError, OSError) as exc:
                raise ClusterError(f"no Dask worker joined the scheduler ({exc})") from None
        try:
            answers = self.client.run(probe, str(self.root), self.run_id, __version__)
        except Exception as exc:  # raised on a worker: any type (segdl not installed there?)
            raise ClusterError(
                f"the Dask workers cannot run segdl ({type(exc).__name__}: {exc}); "
                "install the same segdl on every worker"
            ) from None
        for problem in answers.values():
            if problem is None:
                continue
            if "cannot see" in problem:
                raise DirectoryNotShared(problem)
            raise ClusterError(problem)

    def _worker_threads(self) -> int:
        now = time.monotonic()
        if now >= self._threads_at:
            self._threads = sum(self.client.nthreads().values())
            self._threads_at = now + 5.0
        return self._threads

    def _loop(self, inflight: dict[str, _Flight]) -> Iterator[ItemResult]:
        done: Any = require_dask().as_completed(loop=self.client.loop)
        budget = self.batch.per_host
        # Each shard's share of a host; a group's shards in flight share `budget`.
        share = max(1, budget // max(1, min(budget, self._worker_threads())))
        used: dict[int, int] = {}
        ready: dict[int, deque[tuple[Shard, int]]] = {}
        waiting = 0
        rotate = 0
        feeding = True
        wakes = 0  # shards ended that `done` has not handed over yet
        next_tick = time.monotonic() + _TICK
        while feeding or waiting or inflight:
            if self.cancel is not None and self.cancel.is_set():
                raise Interrupted("interrupted; run the same command again to resume")
            # Ready shards go out while there is room, one group's shares never above budget.
            limit = max(1, self._worker_threads())
            while waiting and len(inflight) < limit:
                groups = sorted(ready)
                chosen = None
                for step in range(len(groups)):
                    group = groups[(rotate + step) % len(groups)]
                    if used.get(group, 0) + share <= budget:
                        chosen = group
                        break
                if chosen is None:
                    break
                rotate += 1
                shard, tries = ready[chosen].popleft()
                if not ready[chosen]:
                    del ready[chosen]
                waiting -= 1
                used[chosen] = used.get(chosen, 0) + share
                flight = self._submit(shard, share, tries)
                inflight[flight.future.key] = flight
                done.add(flight.future)
                # Wakes the caller's thread as soon as the shard ends (read via `done`).
                flight.future.add_done_callback(self._wake)
            finished = done.next_batch(block=False) if done.has_ready() else []
            wakes = max(0, wakes - len(finished)) if inflight else 0
            for future in finished:
                flight = inflight.pop(future.key)
                used[flight.shard.group] -= flight.share
                with self._live_lock:
                    self._live.pop(flight.token, None)
                retry = False
                for result in self._collect(flight):
                    if result is None:
                        retry = True
                    else:
                        yield self._emit(result)
                future.release()
                if retry:
                    ready.setdefault(flight.shard.group, deque()).append(
                        (flight.shard, flight.tries + 1)
                    )
                    waiting += 1
            # A shard that ended wakes this thread; `done` may see it a moment later.
            timeout = 0 if finished else 0.005 if wakes else _POLL
            try:
                kind, value = self._events.get(timeout=timeout)
            except queue.Empty:
                kind, value = "", None
            drained = 0
            while kind:
                drained += 1
                if kind == "wake":
                    wakes += 1
                elif kind == "result":
                    yield self._emit(value)
                elif kind == "shard":
                    ready.setdefault(value.group, deque()).append((value, 0))
                    waiting += 1
                elif kind == "end":
                    feeding = False
                    self.total = value
                elif kind == "error":
                    raise value
                if drained >= _BACKLOG:
                    break  # back to the futures now and then, however fast the feeder is
                try:
                    kind, value = self._events.get_nowait()
                except queue.Empty:
                    kind = ""
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + _TICK

    def _submit(self, shard: Shard, share: int, tries: int) -> _Flight:
        token = uuid.uuid4().hex[:12]
        spec = ShardSpec(
            directory=str(self.root),
            run=self.run_id,
            shard=shard,
            token=token,
            options=self.options,
            batch=dataclasses.replace(self.batch, per_host=share),
            topic=self.topic,
            claims=self._feeder.shared_claims,
            lock_wait=self.lock_wait,
        )
        future = self.client.submit(
            run_shard, spec, key=f"segdl-{shard.id}-{token}", pure=False, retries=0
        )
        return _Flight(shard, future, token, share, tries)

    def _collect(self, flight: _Flight) -> Iterator[ItemResult | None]:
        """The results of a shard that ended; None when it is to be submitted again."""
        killed_worker = require_dask().KilledWorker
        future, shard = flight.future, flight.shard
        if future.status == "finished":
            _, rows = future.result()
            for row in rows:
                yield self._result(row)
            return
        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, DirectoryNotShared):
                raise DirectoryNotShared(str(exc))
            if isinstance(exc, Superseded):
                raise ClusterError(f"another run took over {self.directory}: {exc}")
            if isinstance(exc, ShardBusy) and flight.tries < _RESUBMITS:
                yield None
                return
            if isinstance(exc, killed_worker):
                error = f"shard {shard.id}: the workers running it died ({exc})"
            else:
                error = f"shard {shard.id}: {type(exc).__name__}: {exc}"
        elif flight.tries < _RESUBMITS:  # cancelled by the cluster (a scheduler restart)
            yield None
            return
        else:
            error = f"shard {shard.id} was cancelled by the cluster"
        yield from self._failed_shard(shard, error)

    def _failed_shard(self, shard: Shard, error: str) -> Iterator[ItemResult]:
        """What the last attempt of a failed shard logged, the rest failed with `error`."""
        seen: set[int] = set()
        for row in read_partial(self.root, shard.id):
            if row.index not in seen:
                seen.add(row.index)
                yield self._result(row)
        try:
            for index, url in iter_shard_indexes(self.root, shard.id):
                if index not in seen:
                    yield ItemResult(index, url, None, "failed", error=error)
        except (OSError, ValueError) as exc:
            raise DestinationError(f"cannot read shard {shard.id}: {exc}") from None

    def _result(self, row: Row) -> ItemResult:
        path = None if row.path is None else self.directory / row.path
        engine = None
        if row.result is not None and path is not None:
            final_url, elapsed, connections, fetched, resumed, segmented, warnings = row.result
            engine = Result(
                path,
                row.url,
                final_url,
                row.size,
                elapsed,
                connections,
                fetched,
                resumed,
                segmented,
                warnings=list(warnings),
            )
        return ItemResult(
            row.index,
            row.url,
            path,
            row.status,
            row.http_status,
            row.size,
            row.seconds,
            row.attempts,
            row.error,
            engine,
        )

    def _emit(self, result: ItemResult) -> ItemResult:
        self._done[result.status] += 1
        if result.result is not None:
            self._bytes += result.result.fetched
        self.listener.item_done(result)
        return result

    def _on_event(self, event: tuple[float, Any]) -> None:
        # Called on the client's event loop thread: only record, the caller's thread reports.
        message = event[1]
        if not isinstance(message, dict):
            return
        with self._live_lock:
            if "w" in message:
                self._warnings.append(str(message["w"]))
            else:
                values = (message["i"], message["b"], message["f"], message["c"])
                self._live[str(message["k"])] = values

    def _tick(self, *, final: bool = False) -> None:
        with self._live_lock:
            live = [] if final else list(self._live.values())
            warnings = list(self._warnings)
            self._warnings.clear()
        for message in warnings:
            self.listener.warning(message)
        done = sum(self._done.values()) + sum(v[0] for v in live)
        failed = self._done["failed"] + sum(v[2] for v in live)
        fetched = self._bytes + sum(v[1] for v in live)
        self.listener.batch_progress(done, self.total, fetched, failed, sum(v[3] for v in live))

    def _wake(self, future: Any) -> None:
        self._events.put(("wake", None))

    def _put(self, kind: str, value: Any, stop: threading.Event) -> None:
        """The feeder's way to the caller's thread: waits while the backlog is full."""
        while self._events.qsize() >= _BACKLOG:
            if stop.wait(0.02) or self._stop.is_set():
                raise Stop
        if stop.is_set() or self._stop.is_set():
            raise Stop
        self._events.put((kind, value))
