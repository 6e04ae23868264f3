"""Several URLs or `-i FILE`: the batch command loop (shared by local and cluster batches),
its report rows, the list of failures and the summary."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from ..api import iter_download_many
from ..bars import TqdmBatchListener
from ..batch.manifest import count_records, read_manifest
from ..batch.report import ReportRow, ReportWriter
from ..batch.results import BatchListener, ItemResult
from ..batch.template import Template
from ..core.units import human_size
from ..errors import DiskFullError, Interrupted, SegdlError, UsageError
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Warnings,
    after_bar,
    progress_mode,
    progress_report,
    reporting,
    several_items,
)
from .single import common_options

_MAX_LISTED = 20  # failed items listed on stderr; the rest are counted


def run_batch(args: argparse.Namespace, verify: bool | str, stderr: IO[str]) -> int:
    """A local batch (a cluster batch is `cli.cluster.run`)."""
    extraction = None  # --extract: each archive extracted as it comes (cli/extract.py)

    def start(items: object, listener: BatchListener) -> Iterable[ItemResult]:
        nonlocal extraction
        directory = args.dir
        if args.extract is not None:
            from .extract import BatchExtraction

            extraction = BatchExtraction(args)
            directory = extraction.download_dir
        options = batch_options(args, verify)
        if not several_items(args):
            options["journal"] = False  # a batch of one keeps none, as `segdl URL` keeps none
        if args.checksums is not None:
            options["checksums"] = args.checksums
        count: Callable[[threading.Event], int | None] | None = None
        if progress_mode(args, stderr) != "none" and args.input_file not in (None, "-"):
            # The total of items for the progress, early: a quick pass over the file.
            path, fmt, records = args.input_file, args.input_format, args.records

            def count(stop: threading.Event) -> int | None:
                return count_records(path, format=fmt, records=records, stop=stop)

        results = iter_download_many(
            items,  # type: ignore[arg-type]
            directory,
            listener=listener,
            count=count,
            **options,  # type: ignore[arg-type]
        )
        return results if extraction is None else extraction.results(results)

    try:
        return run_batch_command(args, stderr, start)
    finally:
        if extraction is not None:
            extraction.close()


def batch_options(args: argparse.Namespace, verify: bool | str) -> dict[str, object]:
    """The keyword arguments of a batch (local or on a cluster) from the command line."""
    return {
        "jobs": args.jobs,
        "max_connections": args.max_connections,
        "per_host": args.per_host,
        "template": args.template,
        "accept": args.accept,
        # One rule whatever runs it (here, a batch of one, a cluster): an existing file is an
        # error for one URL, as `segdl URL` says; a batch skips it.
        "if_exists": args.if_exists or ("skip" if several_items(args) else "error"),
        "journal": not args.no_journal,
        **common_options(args, verify),
    }


def run_batch_command(
    args: argparse.Namespace,
    stderr: IO[str],
    start: Callable[[object, BatchListener], Iterable[ItemResult]],
) -> int:
    """Read the input, run `start(items, listener)`'s results to the end, write the report,
    list failures and print the summary; the exit code. Shared by local and cluster batches."""
    listener: BatchListener
    bar: TqdmBatchListener | None = None
    report = progress_report(args, stderr)
    if report is not None:
        listener = report
    elif progress_mode(args, stderr) == "bar":
        listener = bar = TqdmBatchListener(file=stderr)
    else:
        listener = Warnings(stderr)
    rows: ReportWriter | None = None
    started = time.monotonic()
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    fetched = 0
    listed = 0
    stopped: DiskFullError | None = None

    def take(result: ItemResult) -> None:
        nonlocal fetched, listed
        counts[result.status] += 1
        if report is not None:
            report.item_done(result)
        elif bar is not None:
            bar.item_done(result)
        if result.result is not None:
            fetched += result.result.fetched
        if rows is not None:
            rows.write(_row(result, Path(args.dir) if args.dir else Path.cwd()))
        if result.status == "failed":
            listed += 1
            if listed <= _MAX_LISTED:
                line = _failed_line(result)
                if bar is not None:
                    bar.warning_line(line)
                else:
                    print(line, file=stderr)

    try:
        if args.input_file is not None:
            items: object = read_manifest(
                args.input_file,
                format=args.input_format,
                url_field=args.url_field,
                records=args.records,
                # A field no record has would fail every item: the first record tells now.
                fields=Template.parse(args.template).record_fields,
                checksum_field=args.checksum_field,
            )
        else:
            items = args.urls
        if args.report:
            rows = ReportWriter(Path(args.report))
        with reporting(report):
            for result in start(items, listener if report is None else _FinalResults(report)):
                take(result)
    except UsageError as exc:
        after_bar(bar, f"segdl: error: {exc}", stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        after_bar(bar, "segdl: interrupted; run the same command again to resume", stderr)
        return EXIT_INTERRUPTED
    except DiskFullError as exc:
        # The batch stopped there, consistent: what it did is worth the summary below.
        stopped = exc
    except SegdlError as exc:
        after_bar(bar, f"segdl: error: {exc}", stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
        if rows is not None:
            rows.close()
    if stopped is not None:
        print(f"segdl: error: {stopped}", file=stderr)
    if listed > _MAX_LISTED:
        print(f"segdl: ... and {listed - _MAX_LISTED} more failed items", file=stderr)
    if not args.quiet:
        elapsed = time.monotonic() - started
        rate = fetched / elapsed if elapsed > 0 else 0.0
        print(
            f"segdl: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed; "
            f"{human_size(fetched)} in {elapsed:.2f} s, {human_size(rate)}/s",
            file=stderr,
        )
    return EXIT_FAILED if counts["failed"] or stopped is not None else EXIT_OK


class _FinalResults(BatchListener):
    """The batch's events but `item_done`: the command sends that itself, with each item's
    final result (an archive's extraction may still fail an item the batch fetched)."""

    def __init__(self, listener: BatchListener) -> None:
        self._listener = listener

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        self._listener.batch_progress(items, total, done, failed, connections)

    def warning(self, message: str) -> None:
        self._listener.warning(message)


def _failed_line(result: ItemResult) -> str:
    """`#index URL: error`, naming the URL once: with mirrors the error names each URL."""
    error = result.error or "failed"
    if result.url and not error.startswith(f"{result.url}: "):
        error = f"{result.url}: {error}"
    return f"segdl: failed: #{result.index} {error}"


def _row(result: ItemResult, directory: Path) -> ReportRow:
    path = result.relative_path(directory)
    return ReportRow(
        index=result.index,
        url=result.url,
        path=path,
        status=result.status,
        http_status=result.http_status,
        bytes=result.size,
        seconds=result.seconds,
        attempts=result.attempts,
        error=result.error,
        protocol=result.protocol,
    )
