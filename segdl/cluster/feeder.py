"""The feeder: the driver's thread that reads the manifest (a stream, never all of it), settles
what a local batch settles before any request (a destination no template can make, the same
item twice, two items to one path: in input order, as `Batch._prepare` does), and writes the
shards. A shard whose marker is there, clean, with every file in place, is not run again: its
items are reported skipped, as a local re-run reports journaled items."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..batch.manifest import BadRecord, Record
from ..batch.results import ItemResult
from ..batch.run import Claims, destination, refusal
from ..batch.template import Template, TemplateError
from ..core.scheduler import Stop
from ..errors import SegdlError
from .shards import Shard, ShardWriter, SharedClaims, host_group, in_place, read_marker, shard_dir


class Feeder(threading.Thread):
    """Reads `records` into shards under `root`; everything it decides goes through
    `put(kind, value, stop)`: ("result", ItemResult), ("shard", Shard), ("end", count) or
    ("error", SegdlError)."""

    def __init__(
        self,
        records: Iterable[Record | BadRecord],
        root: Path,
        directory: Path,
        template: Template,
        shard_size: int,
        put: Callable[[str, Any, threading.Event], None],
        claims: SharedClaims,
    ) -> None:
        super().__init__(name="segdl-shard-feeder", daemon=True)
        self.records = records
        self.root = root  # absolute: where the shards go
        self.directory = directory  # as the caller gave it: results are reported under it
        self.template = template
        self.shard_size = shard_size
        self.stop = threading.Event()
        self._send = put
        self._store = claims
        # Whether tasks must claim destinations run-wide: only once an item is to be named by
        # its answer; until then `_settle` has settled every path, in input order, before
        # any request. Read by the driver for each shard it submits.
        self.shared_claims = False

    def _put(self, kind: str, value: Any) -> None:
        self._send(kind, value, self.stop)

    def run(self) -> None:
        records = self.records
        writer = ShardWriter(self.root, self.shard_size)
        claims = Claims()
        count = 0
        try:
            iterator = iter(records)
            while True:
                try:
                    record = next(iterator)
                except StopIteration:
                    break
                except SegdlError as exc:
                    # An input that breaks off mid-way: what was read is fetched, the rest
                    # reported, as in a local batch.
                    self._put(
                        "result", ItemResult(count, "", None, "failed", error=f"input: {exc}")
                    )
                    break
                count += 1
                if self.stop.is_set():
                    raise Stop
                if isinstance(record, BadRecord):
                    self._put(
                        "result", ItemResult(record.index, "", None, "failed", error=record.error)
                    )
                    continue
                named_by_answer = record.out is None and (
                    record.dir is not None or self.template.needs_name
                )
                if named_by_answer and not self.shared_claims:
                    self._backfill(claims)
                refused = self._settle(record, claims)
                if refused is not None:
                    self._put("result", refused)
                    continue
                shard = writer.add(host_group(record.urls[0]), record)
                if shard is not None:
                    self._ready(shard)
            for shard in writer.finish():
                self._ready(shard)
            self._put("end", count)
        except Stop:
            writer.abort()
        except SegdlError as exc:
            writer.abort()
            with contextlib.suppress(Stop):
                self._put("error", exc)
        finally:
            claims.close()

    def _backfill(self, claims: Claims) -> None:
        """The first item to be named by its answer (`{name}`, or a txt `dir=` without `out=`):
        from now on tasks claim run-wide, and the paths settled so far are claimed there first,
        so that it cannot take one of them whatever name its answer gives."""
        for path, url, index in claims.paths():
            self._store.claim(path, url, index)
        self.shared_claims = True

    def _settle(self, record: Record, claims: Claims) -> ItemResult | None:
        """What a local batch decides before any request, besides the journal: a destination
        no template can make, the same item twice, two items to one path (kept in step with
        `Batch._prepare`). None: the item goes to its shard."""
        url = record.urls[0]
        try:
            relative, _, key = destination(record, self.template)
        except TemplateError as exc:
            return ItemResult(record.index, url, None, "failed", error=f"{record.where}: {exc}")
        if relative is None:
            return claims.claim_item(key, record)
        holder = claims.claim(relative.as_posix(), url, record.index)
        return refusal(holder, record, relative, self.directory)

    def _ready(self, shard: Shard) -> None:
        """A shard is written: run it, unless its marker says it is done and its files are
        all still in place (then its items are reported skipped, as a local re-run does)."""
        marker = read_marker(self.root, shard.id)
        if marker is not None:
            summary, rows = marker
            clean = summary.get("digest") == shard.digest and summary.get("failed") == 0
            if clean and all(in_place(self.root, row) for row in rows):
                for row in rows:
                    error = row.error if row.status == "skipped" else None
                    path = None if row.path is None else self.directory / row.path
                    self._put(
                        "result",
                        ItemResult(row.index, row.url, path, "skipped", size=row.size, error=error),
                    )
                return
        # What an attempt of an earlier run logged must not stand for this run's.
        with contextlib.suppress(OSError):
            os.unlink(shard_dir(self.root, shard.id) / "results.jsonl")
        self._put("shard", shard)
