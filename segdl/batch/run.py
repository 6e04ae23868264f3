"""Running a batch: records in, one result per item out, over one shared scheduler.

Three kinds of thread share the work:

- the *feeder* reads the records (a stream: never the whole list), names what it can before
  any request, skips what the journal or the disk says is done, refuses duplicates, and
  queues the rest by host in a bounded lookahead;
- `files_in_flight` *drivers* (the public `jobs=`, `-j`) each take the next item from the
  host that is least busy, and run it with an `Engine` on the shared `Scheduler`: one GET for a
  small file, ranges for a large one;
- the caller's thread consumes results as they come (a few ahead at most: results not read
  hold the drivers back) and samples progress for the listener; Ctrl-C
  there, closing the results, or an error in any thread (a full disk) stops everything, wakes
  every wait and keeps the journal consistent. No thread ends with an exception of its own:
  it hands it to the run, which raises it once every thread has ended.

Memory is bounded by the lookahead, never by the length of the list: what must be remembered
across all items (the destinations already claimed) lives in a temporary SQLite table.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..core.clock import Clock, page_buffer
from ..core.destination import NAME_ROOM, settle, taken
from ..core.events import TransferListener
from ..core.fetch import giver
from ..core.http import ResponseBody, Transport, open_pool, uses_curl
from ..core.limit import Throttle
from ..core.naming import derive_filename
from ..core.options import Options
from ..core.probe import RemoteInfo
from ..core.retry import RetryPolicy
from ..core.scheduler import Scheduler
from ..core.sink import destination_error
from ..core.urls import Origin, origin
from ..core.verify import Checksum
from ..errors import (
    ConnectError,
    DestinationError,
    DiskFullError,
    InsufficientSpaceError,
    Interrupted,
    ProxyError,
    SegdlError,
    TLSError,
    UsageError,
)
from ..file import Engine, Requeue
from .journal import Journal, journal_path
from .manifest import BadRecord, Record
from .results import BatchListener, ItemResult
from .template import DEFAULT, Template, TemplateError, safe_relative

_TICK = 0.2  # how often the caller's thread samples progress
_ITEM_DRIVERS = 64  # item drivers beside the flights driver, at most
_RESULTS_MIN = 8  # results queued for the caller (at least; files in flight when more)


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs, besides the per-file `Options`."""

    # Files fetched at once (the drivers): what the public `jobs=` and `-j/--jobs` set.
    files_in_flight: int = 16
    max_connections: int | None = None  # the run's; None: the larger of files and connections
    per_host: int = 8
    template: Template = field(default_factory=lambda: Template.parse(DEFAULT))
    journal: bool = True
    # Where the journal lives; None: DIR/.segdl/journal.sqlite3 (a cluster's shards keep one
    # each, so that several processes never share one).
    journal_path: Path | None = None
    lookahead: int = 0  # items read ahead, by host; 0: 8 per file in flight, at least 256
    # Digests by destination path relative to the directory (a `--checksums` file's): an
    # item without its own (`Record.checksum`) must match the one of its path, if listed.
    checksums: Mapping[str, Checksum] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.files_in_flight <= 1024:
            raise UsageError("jobs must be between 1 and 1024")
        if self.max_connections is not None and not 1 <= self.max_connections <= 1024:
            raise UsageError("max connections must be between 1 and 1024")
        if not 1 <= self.per_host <= 1024:
            raise UsageError("per-host connections must be between 1 and 1024")


@dataclass
class _Item:
    record: Record
    key: str  # the journal's identity: the URL and what names the destination
    relative: PurePosixPath | None  # known before any request, else None (needs the name)
    host: Origin  # of the URL tried next
    template: Template  # names the file once the first answer tells the remote's name
    # What a fetch learnt, kept when a paused host puts the item back (see `Requeue`).
    mirror: int = 0  # the URL to try next
    retry: RetryPolicy | None = None  # its retries left, when its host paused it
    started: float | None = None
    attempts: int = 0
    fetched: int = 0
    http_status: int | None = None
    path: Path | None = None  # named by an answer
    errors: list[str] = field(default_factory=list)


def destination(record: Record, template: Template) -> tuple[PurePosixPath | None, Template, str]:
    """Where `record` goes, as far as is known before any request: the relative path (None
    when the answer names the file), the template that names it then, and the item's identity
    in the journal. Raises TemplateError for fields that cannot make a safe path."""
    url = record.urls[0]
    relative: PurePosixPath | None
    if record.out is not None or record.dir is not None:
        folder = safe_relative(record.dir) if record.dir else PurePosixPath()
        name = safe_relative(record.out, max_bytes=NAME_ROOM) if record.out else None
        if name is None:
            # A dir= without out=: the remote's name, in that folder.
            template = Template.parse(f"{folder.as_posix()}/{{name}}")
            relative = None
        else:
            relative = folder / name
    elif template.needs_name:
        relative = None
    else:
        relative = template.render(record.fields, index=record.index, max_bytes=NAME_ROOM)
    if relative is not None:
        return relative, template, f"{url}\0{relative.as_posix()}"
    used = {k: record.fields.get(k) for k in sorted(template.fields)}
    return None, template, f"{url}\0{template.text}\0{json.dumps(used, sort_keys=True)}"


class ClaimStore(Protocol):
    """Where destinations are claimed: `claim(path, url, index)` is None when `path` was free
    (it is now the item's), else (url, index) of the item that holds it."""

    def claim(self, path: str, url: str, index: int) -> tuple[str, int] | None: ...


class Claims:
    """Destinations already taken in this run, in a private on-disk SQLite table (memory stays
    flat however long the list): the same URL twice is fetched once, another URL to a taken
    path fails. Also holds the keys of items named by their answer (starting with NUL)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        # Private and disposable: no lock, rollback journal or sync per statement.
        for pragma in ("locking_mode=EXCLUSIVE", "journal_mode=OFF", "synchronous=OFF"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE claims (path TEXT PRIMARY KEY, url TEXT, item INTEGER)")
        self._lock = threading.Lock()

    def claim(self, path: str, url: str, index: int) -> tuple[str, int] | None:
        """None when `path` was free (it is now ours), else (url, item) of its holder."""
        with self._lock:
            # One statement for the usual case (a free path); the holder only when taken.
            added = self._db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (path, url, index)
            ).rowcount
            if added:
                return None
            row = self._db.execute(
                "SELECT url, item FROM claims WHERE path = ?", (path,)
            ).fetchone()
            return str(row[0]), int(row[1])

    def claim_item(self, key: str, record: Record) -> ItemResult | None:
        """Claims the journal `key` of an item named by its answer (the same URL and fields
        twice would name the same file): None when free, else the duplicate's result."""
        url = record.urls[0]
        holder = self.claim(f"\0{key}", url, record.index)
        if holder is None:
            return None
        return ItemResult(record.index, url, None, "skipped", error=f"same item as {holder[1]}")

    def paths(self) -> list[tuple[str, str, int]]:
        """(path, url, item) of every destination claimed so far (not the items' keys)."""
        with self._lock:
            rows = self._db.execute("SELECT path, url, item FROM claims").fetchall()
        return [(str(p), str(u), int(i)) for p, u, i in rows if not str(p).startswith("\0")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def refusal(
    holder: tuple[str, int] | None, record: Record, relative: PurePosixPath, directory: Path
) -> ItemResult | None:
    """The result of `record` when its destination `relative` is held already by `holder`
    (url, index): skipped for the same URL (fetched once), failed for another; None if free."""
    if holder is None:
        return None
    url, index = holder
    path = directory / relative
    if url == record.urls[0]:
        return ItemResult(
            record.index, url, path, "skipped", error=f"same URL and path as item {index}"
        )
    error = f"{relative.as_posix()} is already the destination of item {index} ({url})"
    return ItemResult(record.index, record.urls[0], path, "failed", error=error)


class _Lookahead:
    """Items read ahead, queued by host; drivers take from the least busy host first, and never
    from a host paused by a 429/503 (a driver would only wait there while others have work)."""

    def __init__(
        self,
        limit: int,
        load: Callable[[Origin], tuple[int, int, float]],
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self._limit = limit
        self._load = load
        self._on_put = on_put  # told of every item added (the flights driver waits for it)
        self._hosts: dict[Origin, deque[_Item]] = {}
        self._count = 0
        self._ended = False
        lock = threading.Lock()
        self._not_full = threading.Condition(lock)  # the feeder waits here
        self._not_empty = threading.Condition(lock)  # drivers wait here

    def put(self, item: _Item, stop: threading.Event) -> bool:
        with self._not_full:
            while self._count >= self._limit:
                if stop.is_set():
                    return False
                self._not_full.wait(_TICK)
            self._add(item)
            return True

    def put_back(self, item: _Item) -> None:
        """An item its host paused: first of that host's items again (beyond the limit: the
        feeder may be waiting for room, and this item was taken from here)."""
        with self._not_full:
            self._add(item, first=True)

    def _add(self, item: _Item, *, first: bool = False) -> None:
        waiting = self._hosts.setdefault(item.host, deque())
        if first:
            waiting.appendleft(item)
        else:
            waiting.append(item)
        self._count += 1
        self._not_empty.notify()
        if self._on_put is not None:
            self._on_put()

    def drained(self) -> bool:
        """No item is left, and none will come."""
        with self._not_full:
            return self._ended and not self._count

    def try_take(self) -> _Item | None:
        """The next item of the unpaused host with the most free slots, now; None when no
        host with items has a free slot."""
        with self._not_empty:
            best = self._best(full=False)
            return None if best is None else self._pop(best)

    def _best(self, *, full: bool) -> Origin | None:
        """The unpaused host with the most room (`full`: also hosts at their cap)."""
        best: Origin | None = None
        best_room = 0.0
        for host in self._hosts:
            busy, cap, pause = self._load(host)
            if pause > 0 or (not full and busy >= cap):
                continue
            room = (cap - busy) / cap
            if best is None or room > best_room:
                best, best_room = host, room
        return best

    def _pop(self, host: Origin) -> _Item:
        waiting = self._hosts.pop(host)
        item = waiting.popleft()
        if waiting:
            # To the back: equally idle hosts take turns.
            self._hosts[host] = waiting
        self._count -= 1
        self._not_full.notify()
        return item

    def end(self) -> None:
        """No more items; also called on stop, to wake every waiter."""
        with self._not_full:
            self._ended = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def take(self, stop: threading.Event) -> _Item | None:
        """The next item, from the unpaused host with the most room; None at the end or on
        stop. Waits while every host with items is paused."""
        with self._not_empty:
            while True:
                if stop.is_set() or (self._ended and not self._count):
                    return None
                best = self._best(full=True)
                if best is not None:
                    return self._pop(best)
                self._not_empty.wait(_TICK)  # every host with items is paused


@dataclass
class _Flight:
    """A first GET sent by the flights driver, not settled yet."""

    item: _Item
    url: str
    transport: Transport
    body: ResponseBody
    release: Callable[[], None]  # gives back its slot


def _nothing() -> None:
    """Nothing to do: a slot given back already, a driver with no handoffs to count."""


class _ToDrivers(Exception):
    """An item the flights driver cannot finish without waiting: to the item drivers."""


class _Handoffs:
    """Items the flights driver passes to the item drivers: with their first GET sent (a
    large file, a redirect, an error to retry), or not (a mirror to try next)."""

    def __init__(self, on_done: Callable[[], None]) -> None:
        self._on_done = on_done  # the flights driver counts these among the files in flight
        self._items: deque[tuple[_Item, _Flight | None]] = deque()
        self._cond = threading.Condition()
        self._busy = 0
        self._ended = False

    def put(self, item: _Item, flight: _Flight | None) -> None:
        with self._cond:
            self._items.append((item, flight))
            self._cond.notify()

    def take(self, stop: threading.Event) -> tuple[_Item, _Flight | None] | None:
        """The next handoff; None once ended and empty, or on stop."""
        with self._cond:
            while not self._items:
                if self._ended or stop.is_set():
                    return None
                self._cond.wait(_TICK)
            self._busy += 1
            return self._items.popleft()

    def done(self) -> None:
        with self._cond:
            self._busy -= 1
        self._on_done()

    def load(self) -> int:
        """Items handed over and not finished yet (waiting, or in a driver's hands)."""
        with self._cond:
            return len(self._items) + self._busy

    def end(self) -> list[_Flight]:
        """No more handoffs; the flights never taken, for the caller to close."""
        with self._cond:
            self._ended = True
            left = [flight for _, flight in self._items if flight is not None]
            self._items.clear()
            self._cond.notify_all()
            return left


class _ItemListener(TransferListener):
    """Forwards an item's warnings to the batch listener, naming the item."""

    def __init__(self, batch: BatchListener, url: str) -> None:
        self._batch = batch
        self._url = url

    def warning(self, message: str) -> None:
        self._batch.warning(f"{self._url}: {message}")


class Batch:
    """One run of a batch into `directory`; `run(records)` yields results as items finish."""

    def __init__(
        self,
        directory: Path,
        options: Options,
        batch: BatchOptions,
        *,
        listener: BatchListener | None = None,
        cancel: threading.Event | None = None,
        clock: Clock | None = None,
        shared: ClaimStore | None = None,
        count: Callable[[threading.Event], int | None] | None = None,
    ) -> None:
        self.directory = directory
        # Where destinations are also claimed beyond this run (a cluster's shards), if anywhere.
        self.shared = shared
        self.options = options
        self.batch = batch
        self.listener = listener or BatchListener()
        self._caller_cancel = cancel
        self.cancel = threading.Event()  # the engines': set on the caller's cancel or Ctrl-C
        self.clock = clock or Clock()
        max_connections = batch.max_connections or max(batch.files_in_flight, options.connections)
        self.scheduler = Scheduler(
            max_connections=max_connections,
            per_host=batch.per_host,
            streams=options.streams,
            buffer_factory=lambda: page_buffer(options.buffer_size),
            monotonic=self.clock.monotonic,
        )
        self.pool = open_pool(options, hosts=16, per_host=batch.per_host)
        # Where the transport sends without waiting (libcurl), one thread keeps the first
        # GETs of `files_in_flight` items in flight and finishes those whose whole answer
        # came (a small file); the others go to a few item drivers (see `_drive_flights`).
        self._flights = uses_curl(options)
        self._wake = threading.Event()  # the flights driver's: an answer settled, items came
        self.throttle = Throttle.of(options, self.clock.monotonic)  # every file's speed limits
        self._stop = threading.Event()  # set on cancel, an error, or when the caller stops
        self._results: queue.Queue[ItemResult | None] = queue.Queue()
        # Results not consumed yet hold back the threads beyond a few: a caller that stops
        # reading (and holds the iterator) stops the downloads too.
        self._room = threading.Semaphore(max(_RESULTS_MIN, batch.files_in_flight))
        self._error: BaseException | None = None  # what stops the run (a full disk, a bug)
        self._error_lock = threading.Lock()
        self._gone = threading.Event()  # the caller reads no more results
        self._engines: set[Engine] = set()
        self._engines_lock = threading.Lock()
        self._done_bytes = 0  # bytes of the items finished
        self._dead: dict[Origin, str] = {}  # hosts that never answered: their items fail fast
        self._made: set[Path] = set()  # folders already created (bounded)
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self.total: int | None = None  # items in the input, once the feeder has read them all
        # A quick count of the input (`count`, run in a thread of its own beside the feeder),
        # the total the progress shows until the feeder's own count replaces it.
        self._count = count
        self._counted: int | None = None
        self.journal: Journal | None = None
        self._lookahead: _Lookahead | None = None

    # -- the caller's thread -------------------------------------------------------------------
    def run(self, records: Iterable[Record | BadRecord]) -> Generator[ItemResult, None, None]:
        """Yield one result per item, in the order they finish. Never raises for one item;
        raises Interrupted on cancel or Ctrl-C, and DiskFullError (or another error of the
        destination or the journal) at the first full disk: every thread has ended by then and
        the journal is consistent."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise destination_error(exc, self.directory, "create directory") from None
        if not self.directory.is_dir():
            raise DestinationError(f"{self.directory} exists and is not a directory")
        if self.batch.journal:
            self.journal = Journal(self.batch.journal_path or journal_path(self.directory))
        claims = Claims()
        lookahead = _Lookahead(
            self.batch.lookahead or max(256, 8 * self.batch.files_in_flight),
            self.scheduler.host_load,
            on_put=self._wake.set if self._flights else None,
        )
        self._lookahead = lookahead
        feeder = threading.Thread(
            target=self._feed, args=(records, lookahead, claims), name="segdl-feeder", daemon=True
        )
        if self._flights:
            handoffs = _Handoffs(self._wake.set)
            drivers = [
                threading.Thread(
                    target=self._drive_flights,
                    args=(lookahead, claims, handoffs),
                    name="segdl-flights",
                    daemon=True,
                )
            ]
            drivers += [
                threading.Thread(
                    target=self._drive,
                    args=(
                        functools.partial(handoffs.take, self._stop),
                        lookahead,
                        claims,
                        handoffs.done,
                    ),
                    name=f"segdl-driver-{i}",
                    daemon=True,
                )
                for i in range(min(self.batch.files_in_flight, _ITEM_DRIVERS))
            ]
        else:
            drivers = [
                threading.Thread(
                    target=self._drive,
                    args=(functools.partial(self._next, lookahead), lookahead, claims),
                    name=f"segdl-driver-{i}",
                    daemon=True,
                )
                for i in range(self.batch.files_in_flight)
            ]
        counter: threading.Thread | None = None
        counted = threading.Event()  # set when the run ends: a count still going stops
        if self._count is not None:
            counter = threading.Thread(
                target=self._run_count, args=(self._count, counted), name="segdl-counter"
            )
        feeder.start()
        for thread in drivers:
            thread.start()
        if counter is not None:
            counter.start()
        running = len(drivers)
        interrupted = False
        next_tick = self.clock.monotonic() + _TICK
        caller_cancel = self._caller_cancel
        try:
            # On an error the threads stop, and the results of what they finished still come.
            while running:
                if caller_cancel is not None and caller_cancel.is_set():
                    interrupted = True
                    break
                try:
                    result: ItemResult | bool | None = self._results.get(timeout=_TICK)
                except queue.Empty:
                    result = False  # nothing came: only time to tick
                if result is None:
                    running -= 1  # a driver ended
                elif result is not False:
                    assert isinstance(result, ItemResult)
                    self._room.release()
                    self.counts[result.status] += 1
                    self.listener.item_done(result)
                    yield result
                if self.clock.monotonic() >= next_tick:
                    self._tick()
                    next_tick = self.clock.monotonic() + _TICK
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Also when the caller stops iterating (GeneratorExit): nothing outlives the batch.
            self._gone.set()
            if interrupted or running:
                self._halt()
            lookahead.end()
            for thread in drivers:
                thread.join()
            # The feeder may be blocked reading the input (a pipe): it cannot be woken there,
            # and stops at its next record.
            feeder.join(timeout=1.0)
            counted.set()
            if counter is not None:
                counter.join()
            self.scheduler.close()
            self.pool.close()
            claims.close()
            if self.journal is not None:
                self.journal.close()
            self._tick()
        if self._error is not None:
            raise self._error
        if interrupted:
            raise Interrupted("interrupted; run the same command again to resume")

    def _halt(self) -> None:
        """Stop every thread: engines stop their transfers (keeping what can be resumed),
        waits wake, and requests still waiting for their answer's headers are cut."""
        self.cancel.set()
        self._stop.set()
        self._wake.set()
        if self._lookahead is not None:
            self._lookahead.end()
        self.pool.abort()

    def _fail(self, exc: BaseException) -> None:
        """A thread met what stops the whole run (a full disk, a journal that cannot be
        written, a bug): the run raises it once every thread has ended."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self._halt()

    def _tick(self) -> None:
        with self._engines_lock:
            active = sum(engine.fetched for engine in self._engines)
            connections = len(self._engines)
        done = self.counts["ok"] + self.counts["skipped"] + self.counts["failed"]
        total = self.total if self.total is not None else self._counted
        if total is not None and total < done:
            total = None  # the quick count was short (an odd line): not a total to show
        self.listener.batch_progress(
            done, total, self._done_bytes + active, self.counts["failed"], connections
        )

    def _run_count(
        self, count: Callable[[threading.Event], int | None], stop: threading.Event
    ) -> None:
        try:
            self._counted = count(stop)
        except BaseException as exc:  # a bug: no thread ends with an exception of its own
            self._fail(exc)

    # -- the feeder ---------------------------------------------------------------------------
    def _feed(
        self, records: Iterable[Record | BadRecord], lookahead: _Lookahead, claims: Claims
    ) -> None:
        count = 0
        try:
            for record in records:
                count += 1
                if self._stop.is_set():
                    return
                if isinstance(record, BadRecord):
                    self._put(ItemResult(record.index, "", None, "failed", error=record.error))
                    continue
                item = self._prepare(record, claims)
                if item is not None and not lookahead.put(item, self._stop):
                    return
            self.total = count
        except SegdlError as exc:
            # An input that breaks off mid-way: what was read is fetched, the rest reported.
            self._put(ItemResult(count, "", None, "failed", error=f"input: {exc}"))
        except BaseException as exc:  # the claims' or the journal's database failed, or a bug
            self._fail(exc)
        finally:
            lookahead.end()

    def _prepare(self, record: Record, claims: Claims) -> _Item | None:
        """Name what can be named before any request; skip or refuse what needs no request."""
        url = record.urls[0]
        try:
            relative, template, key = destination(record, self.batch.template)
        except TemplateError as exc:
            self._put(self._failed(record, None, f"{record.where}: {exc}"))
            return None
        if self.journal is not None:
            entry = self.journal.is_done(key, self.directory)
            # Finished, and verified against the digest asked for now, if any.
            if (
                entry is not None
                and entry.path is not None
                and entry.vouches_for(self._checksum(record, PurePosixPath(entry.path)))
            ):
                path = self.directory / entry.path
                self._put(
                    ItemResult(record.index, entry.url, path, "skipped", size=entry.size or 0)
                )
                return None
        item = _Item(record, key, relative, origin(url), template)
        if relative is None:
            duplicate = claims.claim_item(key, record)
            if duplicate is not None:
                self._put(duplicate)
                return None
        else:
            refused = self._claim(item, relative, claims)
            if refused is not None:
                self._put(refused)
                return None
            final = self.directory / relative
            if (
                self.options.if_exists == "skip"
                and taken(final)
                and self._checksum(record, relative) is None  # else fetched and verified
            ):
                self._put(ItemResult(record.index, url, final, "skipped", size=_size(final)))
                return None
        return item

    def _claim(self, item: _Item, relative: PurePosixPath, claims: Claims) -> ItemResult | None:
        """Claims `relative` for `item`, in this run and then in the shared store if any; the
        item's result when it is held already."""
        record = item.record
        for store in (claims, self.shared):
            if store is not None:
                holder = store.claim(relative.as_posix(), record.urls[0], record.index)
                refused = refusal(holder, record, relative, self.directory)
                if refused is not None:
                    return refused
        return None

    # -- the drivers --------------------------------------------------------------------------
    def _drive(
        self,
        take: Callable[[], tuple[_Item, _Flight | None] | None],
        lookahead: _Lookahead,
        claims: Claims,
        done: Callable[[], None] = _nothing,
    ) -> None:
        """An item driver: runs each item `take` gives (with its first GET, if sent already)
        to its result, until `take` gives None; `done` after each."""
        try:
            while not self._stop.is_set():
                taken = take()
                if taken is None:
                    return
                item, flight = taken
                try:
                    result = self._fetch(item, claims, flight=flight)
                except Requeue:
                    # Its host asked for a pause: this driver serves other hosts meanwhile.
                    lookahead.put_back(item)
                    continue
                finally:
                    done()
                if result is not None:
                    self._put(result)
        except BaseException as exc:  # a full disk, a journal that cannot be written, a bug
            self._fail(exc)
        finally:
            self._results.put(None)

    def _next(self, lookahead: _Lookahead) -> tuple[_Item, None] | None:
        """The next item of the lookahead, for a driver that sends its first GET itself."""
        item = lookahead.take(self._stop)
        return None if item is None else (item, None)

    def _drive_flights(self, lookahead: _Lookahead, claims: Claims, handoffs: _Handoffs) -> None:
        """The first GETs of up to `files_in_flight` items in flight at once, on one thread:
        libcurl sends them and tells `_wake` as each settles; an item whose whole answer came
        (a small file) is finished here, without a thread of its own; any other (a large
        file, a redirect, an error) goes to the item drivers with its answer."""
        flights: dict[int, _Flight] = {}
        settled: deque[ResponseBody] = deque()
        wake = self._wake

        def on_settled(body: ResponseBody) -> None:  # in libcurl's thread
            settled.append(body)
            wake.set()

        try:
            while not self._stop.is_set():
                wake.clear()
                # The answers that came whole free their slots at once (the connection is
                # back in libcurl's pool): new requests go out before these are written.
                landed: list[_Flight] = []
                while settled:
                    flight = flights.pop(id(settled.popleft()), None)
                    if flight is None:
                        continue
                    body = flight.body
                    if body.in_memory and body.status in (200, 206, 416):
                        flight.release()
                        flight.release = _nothing
                        landed.append(flight)
                    else:
                        handoffs.put(flight.item, flight)  # to finish the blocking way
                # Files in flight: these first GETs and the items handed over.
                while len(flights) + handoffs.load() < self.batch.files_in_flight:
                    item = lookahead.try_take()
                    if item is None or not self._launch(item, flights, on_settled, handoffs):
                        break
                for flight in landed:
                    self._land(flight, claims, lookahead, handoffs)
                if not flights and not handoffs.load() and lookahead.drained():
                    return
                if not landed:
                    wake.wait(_TICK)
        except BaseException as exc:  # a full disk, a journal that cannot be written, a bug
            self._fail(exc)
        finally:
            for flight in [*flights.values(), *handoffs.end()]:
                flight.body.close()
                flight.release()
            self._results.put(None)

    def _launch(
        self,
        item: _Item,
        flights: dict[int, _Flight],
        on_settled: Callable[[ResponseBody], None],
        handoffs: _Handoffs,
    ) -> bool:
        """Send `item`'s first GET; False when its host has no free slot (it goes back)."""
        if item.started is None:
            item.started = self.clock.monotonic()
        url = item.record.urls[item.mirror]
        host = origin(url)
        if item.mirror or host in self._dead:
            handoffs.put(item, None)  # a mirror, or a host that never answers: not here
            return True
        if not self.scheduler.try_acquire(host):
            assert self._lookahead is not None
            self._lookahead.put_back(item)
            return False
        release = giver(self.scheduler, host)
        transport = self.pool.transport(url)
        body = transport.start_first(url, on_settled)
        if body is None:  # through a proxy: the blocking way
            release()
            handoffs.put(item, None)
            return True
        flights[id(body)] = _Flight(item, url, transport, body, release)
        return True

    def _land(
        self, flight: _Flight, claims: Claims, lookahead: _Lookahead, handoffs: _Handoffs
    ) -> None:
        """Finish here an item whose first GET's whole answer came."""
        try:
            result = self._fetch(flight.item, claims, flight=flight, here=True)
        except _ToDrivers:
            handoffs.put(flight.item, None)
            return
        except Requeue:
            lookahead.put_back(flight.item)
            return
        if result is not None:
            self._put(result)

    def _fetch(
        self,
        item: _Item,
        claims: Claims,
        *,
        flight: _Flight | None = None,
        here: bool = False,
    ) -> ItemResult | None:
        """Fetch `item` from its first mirror that works; None when interrupted. Raises
        Requeue when a host paused it (`item` then knows where to go on), DiskFullError.
        `flight`: its first GET, sent already. `here`: on the flights driver, which never
        waits for the network: a next mirror raises `_ToDrivers`."""
        record = item.record
        if item.started is None:
            item.started = self.clock.monotonic()
        path: Path | None = None if item.relative is None else self.directory / item.relative
        path = item.path or path
        while item.mirror < len(record.urls):
            if here and flight is None:
                raise _ToDrivers
            url = record.urls[item.mirror]
            host = origin(url)
            sent, flight = flight, None
            if host in self._dead:
                if sent is not None:
                    sent.body.close()
                    sent.release()
                item.errors.append(_item_error(record, url, self._dead[host]))
                item.mirror += 1
                continue
            transport = sent.transport if sent is not None else self.pool.transport(url)
            engine = Engine(
                transport,
                self.options,
                _ItemListener(self.listener, url),
                cancel=self.cancel,
                clock=self.clock,
                scheduler=self.scheduler,
                throttle=self.throttle,
            )
            if item.retry is not None:
                engine.retry = item.retry  # the retries left when its host paused it
            names: list[Path] = []
            with self._engines_lock:
                self._engines.add(engine)
            try:
                result = engine.fetch_first(
                    url,
                    functools.partial(
                        self._resolve, item, claims=claims, names=names, engine=engine
                    ),
                    requeue=True,
                    started=None if sent is None else sent.body,
                    slot=None if sent is None else sent.release,
                )
            except Interrupted:
                return None
            except Requeue as paused:
                item.attempts += engine.attempts
                item.http_status = engine.http_status or item.http_status
                item.retry, item.host = paused.policy, host
                raise
            except SegdlError as exc:
                if isinstance(exc, DiskFullError) and not isinstance(exc, InsufficientSpaceError):
                    raise  # not this item's fault: the run stops (and the journal says nothing)
                if isinstance(exc, ProxyError):
                    raise  # the proxy every item goes through is down or refused us: the same
                item.attempts += engine.attempts
                item.http_status = engine.http_status or item.http_status
                item.fetched += engine.fetched
                path = item.path = names[-1] if names else path
                item.errors.append(_item_error(record, url, str(exc)))
                item.mirror += 1
                item.retry = None
                self._note_host(host, exc)
                if isinstance(exc, DestinationError | TemplateError):
                    break  # local: another mirror would not help
                continue
            finally:
                with self._engines_lock:
                    self._engines.discard(engine)
            attempts = item.attempts + engine.attempts
            seconds = self.clock.monotonic() - item.started
            if result is None:  # the destination existed: skipped
                final = names[-1] if names else path
                size = _size(final) if final is not None else 0
                return ItemResult(
                    record.index,
                    url,
                    final,
                    "skipped",
                    engine.http_status,
                    size,
                    protocol=engine.protocol,
                )
            if self.journal is not None:
                self.journal.record_ok(
                    item.key,
                    url=url,
                    path=result.path.relative_to(self.directory).as_posix(),
                    size=result.size,
                    etag=None,
                    last_modified=None,
                    digest=None if engine.checksum is None else engine.checksum.spec,
                )
            with self._engines_lock:
                self._done_bytes += result.fetched
            return ItemResult(
                record.index,
                url,
                result.path,
                "ok",
                engine.http_status,
                result.size,
                seconds,
                attempts,
                result=result,
                protocol=engine.protocol,
            )
        error = "; ".join(item.errors) or "no URL could be tried"
        if self.journal is not None:
            rel = None if path is None else path.relative_to(self.directory).as_posix()
            self.journal.record_failed(item.key, url=record.urls[0], path=rel, error=error)
        return ItemResult(
            record.index,
            record.urls[0],
            path,
            "failed",
            item.http_status,
            item.fetched,
            self.clock.monotonic() - item.started,
            item.attempts,
            error,
        )

    def _note_host(self, host: Origin, exc: SegdlError) -> None:
        """A host that never answered in this run (the connection pool knows: see
        `ConnectError.answered_before`) and refused a whole retry budget is dead for this run:
        its other items fail at once instead of each waiting out the same budget."""
        if (
            isinstance(exc, ConnectError)
            and not isinstance(exc, TLSError)
            and not exc.answered_before
        ):
            self._dead.setdefault(host, str(exc))

    def _checksum(self, record: Record, relative: PurePosixPath | None) -> Checksum | None:
        """The digest the item's bytes must have: its record's, else its path's line in the
        checksums file, else the options' (the same for every item)."""
        if record.checksum is not None:
            return record.checksum
        if self.batch.checksums is not None and relative is not None:
            found = self.batch.checksums.get(relative.as_posix())
            if found is not None:
                return found
        return self.options.checksum

    def _resolve(
        self,
        item: _Item,
        info: RemoteInfo,
        *,
        claims: Claims,
        names: list[Path],
        engine: Engine,
    ) -> Path | None:
        """The destination of an item whose first answer just came; None to skip it."""
        relative: PurePosixPath | None = item.relative
        if relative is not None:
            final = self.directory / relative
        else:
            name = derive_filename(info.url, info.content_disposition, max_bytes=NAME_ROOM)
            relative = item.template.render(
                item.record.fields, index=item.record.index, name=name, max_bytes=NAME_ROOM
            )
            final = self.directory / relative
            names.append(final)
            refused = self._claim(item, relative, claims)
            if refused is not None:
                if refused.status == "skipped":
                    return None  # the same URL to the same path: fetched once
                raise DestinationError(refused.error or "destination taken")
        names.append(final)
        engine.checksum = self._checksum(item.record, relative)
        policy = self.options.if_exists
        if policy == "skip" and engine.checksum is not None:
            # A file in place that no journal vouches for is not known to match: fetch it
            # again, verified (the journal skipped those that are known to, before any request).
            policy = "overwrite"
        reserve = functools.partial(self._reserve, item, claims)
        settled = settle(final, policy, reserve)
        if settled is None:
            return None
        if settled != final:
            final = settled  # renamed
            names.append(final)
        parent = final.parent
        if parent != self.directory and parent not in self._made:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise destination_error(exc, parent, "create directory") from None
            if len(self._made) >= 4096:
                self._made.clear()  # a cache of folders made, not a record: stays bounded
            self._made.add(parent)
        return final

    def _reserve(self, item: _Item, claims: Claims, path: Path) -> bool:
        relative = path.relative_to(self.directory).as_posix()
        return claims.claim(relative, item.record.urls[0], item.record.index) is None

    # -- results --------------------------------------------------------------------------------
    def _put(self, result: ItemResult) -> None:
        """Queue `result` for the caller, once there is room; dropped when the caller is gone."""
        while not self._room.acquire(timeout=_TICK):
            if self._gone.is_set():
                return
        self._results.put(result)

    def _failed(self, record: Record, path: Path | None, error: str) -> ItemResult:
        return ItemResult(record.index, record.urls[0], path, "failed", error=error)


def _item_error(record: Record, url: str, message: str) -> str:
    """What `url` of `record` failed with, as part of the item's error. The item's line names
    its URL already, so a message that starts with it (an HTTP status) drops it; with mirrors,
    each part names its own URL."""
    message = message.removeprefix(f"{url}: ")
    return f"{url}: {message}" if len(record.urls) > 1 else message


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return os.stat(path).st_size
    return 0


class BatchResults(Iterator[ItemResult]):
    """The results of a batch as items finish. The batch runs while they are read (a few
    ahead at most); `close()`, the end of a `with` block, or dropping the last reference
    stops it: its threads have ended when `close()` returns."""

    def __init__(self, results: Generator[ItemResult, None, None]) -> None:
        self._results = results

    def __iter__(self) -> BatchResults:
        return self

    def __next__(self) -> ItemResult:
        return next(self._results)

    def close(self) -> None:
        self._results.close()

    def __enter__(self) -> BatchResults:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_batch(
    records: Iterable[Record | BadRecord],
    directory: Path,
    options: Options,
    batch: BatchOptions,
    *,
    listener: BatchListener | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    count: Callable[[threading.Event], int | None] | None = None,
) -> BatchResults:
    """Run a batch; results stream out as items finish (see `Batch`). `count(stop)`, if
    given, counts the items of the input quickly in a thread of its own, returning None if
    `stop` is set first: the progress shows that total until the feeder has read them all."""
    run = Batch(
        directory, options, batch, listener=listener, cancel=cancel, clock=clock, count=count
    )
    return BatchResults(run.run(records))
