"""The `segdl` command: argparse, listener choice, one-line errors and exit codes.

One URL is a single download (a batch of one with --report or --accept, keeping one URL's
rules); several URLs or `-i FILE` make a batch. Exit codes: 0 success
(every item ok or skipped), 1 a failed download (a batch still ran to its end), 2 usage error,
130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn, Protocol

from .._version import __version__
from ..api import Listener, download, iter_download_many
from ..api import open as segdl_open
from ..bars import TqdmBatchListener, TqdmListener
from ..batch.manifest import FORMATS, read_manifest
from ..batch.report import ReportRow, ReportWriter
from ..batch.results import BatchListener, ItemResult
from ..batch.template import DEFAULT as DEFAULT_TEMPLATE
from ..batch.template import Template, TemplateError, safe_relative
from ..core.events import TransferListener
from ..core.http.transport import silence_insecure_warnings
from ..core.options import IF_EXISTS, MAX_CONNECTIONS, parse_accept, parse_header, parse_size
from ..core.units import human_size, plural
from ..core.verify import Checksum
from ..errors import DiskFullError, Interrupted, SegdlError, UsageError
from ..file import Result
from ..stream import WINDOW_DEFAULT

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _Warnings(Listener):
    """No bar: warnings still reach the user, one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def warning(self, message: str) -> None:
        print(f"segdl: warning: {message}", file=self.stream)


def _connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CONNECTIONS}")
    return value


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError("must be between 1 and 1024")
    return value


def _accept(text: str) -> tuple[str, ...]:
    try:
        return parse_accept(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segdl",
        description="Download files over several HTTP connections at once: one URL, several, "
        "or a list (-i). Run 'segdl bench' to measure the speed-up on this machine.",
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="http:// or https:// URL(s)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE ('-': to stdout, in order)"
    )
    where.add_argument(
        "-d", "--dir", metavar="DIR", help="save into DIR (created if needed) under the remote name"
    )
    parser.add_argument(
        "-n",
        "--connections",
        type=_connections,
        default=8,
        metavar="N",
        help=f"connections, 1..{MAX_CONNECTIONS} (default 8)",
    )
    parser.add_argument(
        "-k",
        "--min-split",
        type=_size,
        default=1 << 20,
        metavar="SIZE",
        help="smallest range per connection, with K/M/G suffixes (default 1M)",
    )
    parser.add_argument(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'Name: value'",
        help="extra request header (repeatable); not sent to other origins after a redirect",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="longest silence tolerated from the server (default 30)",
    )
    parser.add_argument(
        "--connect-timeout", type=_seconds, default=15.0, metavar="SECONDS", help="(default 15)"
    )
    parser.add_argument(
        "--retries",
        type=_count,
        default=5,
        metavar="N",
        help="retries per connection after failures in a row without progress: timeouts, "
        "dropped connections, 408/429/5xx (default 5); until a host has answered in this run, "
        "an unknown host name is not retried and a refused connection once",
    )
    parser.add_argument(
        "--checksum", metavar="ALGO=HEX", help="verify md5/sha1/sha256/sha512 before finishing"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="ignore a partial download and start again"
    )
    parser.add_argument(
        "--no-direct-io",
        action="store_true",
        help="write through the page cache only (default: whole blocks bypass it on ext4, "
        "xfs, btrfs and f2fs)",
    )
    exists = parser.add_mutually_exclusive_group()
    exists.add_argument(
        "--if-exists",
        choices=IF_EXISTS,
        default=None,
        help="when the destination exists: error, skip, overwrite or rename (default: error "
        "for one URL, skip in a batch)",
    )
    exists.add_argument(
        "--overwrite",
        dest="if_exists",
        action="store_const",
        const="overwrite",
        help="same as --if-exists overwrite",
    )
    parser.add_argument(
        "--max-redirects", type=_count, default=10, metavar="N", help="(default 10)"
    )
    parser.add_argument(
        "--location-trusted",
        action="store_true",
        help="send credentials and -H headers to other hosts after a redirect too",
    )
    parser.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="follow redirects from https to plain http",
    )
    parser.add_argument(
        "--ca-certificate", metavar="FILE", help="trust the CA certificates in FILE"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (dangerous)"
    )
    parser.add_argument(
        "--no-proxy-env",
        action="store_true",
        help="ignore HTTP(S)_PROXY/NO_PROXY and .netrc from the environment",
    )
    batch = parser.add_argument_group("batches (several URLs, or -i)")
    batch.add_argument(
        "-i", "--input-file", metavar="FILE", help="a list of URLs or a manifest ('-': stdin)"
    )
    batch.add_argument(
        "--input-format", choices=FORMATS, help="txt, csv, tsv, json or jsonl (default: by name)"
    )
    batch.add_argument(
        "--url-field", metavar="NAME", help="the URL column or key of -i FILE (default url)"
    )
    batch.add_argument(
        "--records", metavar="PATH", help="dotted path of the array in a json object (images)"
    )
    batch.add_argument(
        "--template",
        metavar="TEMPLATE",
        help="file name relative to -d from the record's fields, e.g. '{class}/{id}.jpg'; "
        "also {name}, {stem}, {ext}, {index} (default {name})",
    )
    batch.add_argument(
        "-j", "--jobs", type=_positive, default=16, metavar="N", help="files at once (default 16)"
    )
    batch.add_argument(
        "--max-connections",
        type=_positive,
        metavar="N",
        help="connections in all (default: the larger of -j and -n)",
    )
    batch.add_argument(
        "--per-host", type=_positive, default=8, metavar="N", help="connections to one host (8)"
    )
    batch.add_argument(
        "--accept",
        type=_accept,
        metavar="TYPES",
        help="accepted Content-Types, comma-separated (image/*): others are failed items "
        "(one URL too)",
    )
    batch.add_argument(
        "--report",
        metavar="FILE",
        help="one row per item, JSON Lines (.jsonl) or CSV (.csv) (one URL too)",
    )
    batch.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no journal in DIR/.segdl (a re-run then checks each file on disk only)",
    )
    from .cluster import add_arguments as add_cluster_arguments

    add_cluster_arguments(
        parser.add_argument_group("batches on a Dask cluster (pip install 'segdl[dask]')")
    )
    parser.add_argument(
        "--window",
        type=_size,
        metavar="SIZE",
        help="with -o - (or --extract DIR, one URL): bytes fetched ahead of the reader "
        "(default 64M)",
    )
    from .extract import add_arguments as add_extract_arguments

    add_extract_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("--version", action="version", version=f"segdl {__version__}")
    return parser


def summary(result: Result) -> str:
    """The one line printed after a download."""
    if result.skipped:
        return f"{result.path}: exists, skipped"
    rate = result.fetched / result.elapsed if result.elapsed > 0 else 0.0
    resumed = f", {human_size(result.resumed)} resumed" if result.resumed else ""
    mode = plural(result.connections, "connection") if result.segmented else "1 connection (stream)"
    return (
        f"{result.path}: {human_size(result.size)} in {result.elapsed:.2f} s, "
        f"{human_size(rate)}/s, {mode}{resumed}{matched(result.verified)}"
    )


def matched(checks: Sequence[Checksum]) -> str:
    """The end of a summary line for the digests the bytes matched: ", sha256 matches
    --checksum"."""
    return "".join(f", {check.algorithm} matches {check.source}" for check in checks)


class _Bar(Protocol):
    def close(self) -> None: ...


def after_bar(bar: _Bar | None, line: str, stream: IO[str]) -> None:
    """Prints `line` once the bar is closed: a bar still open would share its line, and
    draw itself again below it."""
    if bar is not None:
        bar.close()
    print(line, file=stream)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same careful path as Ctrl-C: flush, save state, exit non-zero.
    raise KeyboardInterrupt


def entry() -> NoReturn:
    """The `segdl` command: `main`, then an exit without the interpreter's teardown.

    By the time `main` returns, the download is committed and synced (or its state saved) and
    every file segdl wrote is closed; the teardown would only collect objects and close pooled
    sockets one by one, which the kernel does at exit anyway, 30-40 ms later.
    """
    code = main()
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    several = _several(args)
    if not several and not args.urls:
        parser.error("give a URL, several URLs, or -i FILE")
    _check_usage(parser, args, several)
    on_cluster = args.dask is not None or args.dask_scheduler_file is not None
    # One URL with --report or --accept runs as a batch of one: the batch writes the report
    # row (HTTP status, attempts, error) and fails an unwanted type without a file.
    is_batch = several or on_cluster or bool(args.report or args.accept)
    if args.output and several:
        parser.error("-o names one file: with several URLs or -i, use -d DIR (and --template)")
    if args.output and on_cluster:
        parser.error("-o FILE: not with --dask (a cluster saves into -d DIR)")
    if is_batch and args.output:
        _output_as_item(parser, args)
    from .extract import check_arguments as check_extract_arguments

    check_extract_arguments(parser, args, is_batch)
    # Defaults filled in only now: the checks above needed to know what was given.
    args.template = DEFAULT_TEMPLATE if args.template is None else args.template
    args.window = WINDOW_DEFAULT if args.window is None else args.window
    stderr = sys.stderr
    verify: bool | str = True
    if args.insecure:
        verify = False
        silence_insecure_warnings()
        print("segdl: warning: TLS certificate verification is off (--insecure)", file=stderr)
    elif args.ca_certificate:
        verify = args.ca_certificate
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if is_batch:
            return _batch(args, verify, stderr)
        if args.extract is not None:
            from .extract import run_single as extract_single

            return extract_single(args, _common(args, verify), stderr)
        return _single(args, verify, stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _several(args: argparse.Namespace) -> bool:
    """Whether the command names several items (URLs or -i) rather than one URL. One URL
    keeps the rules of one download (--if-exists error, no --template) however it runs."""
    return args.input_file is not None or len(args.urls) > 1


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace, several: bool) -> None:
    """Options that would do nothing here are usage errors naming what they need."""
    for option, given in (
        ("--input-format", args.input_format is not None),
        ("--url-field", args.url_field is not None),
        ("--records", args.records is not None),
    ):
        if given and args.input_file is None:
            parser.error(f"{option}: only with -i FILE (it reads the records of a manifest)")
    if args.template is not None and not several:
        parser.error(
            "--template: only with several URLs or -i FILE (with one URL, -o FILE names the file)"
        )
    streamed = args.output == "-" or (args.extract is not None and not several)
    if args.window is not None and not streamed:
        parser.error("--window: only with -o - (or --extract DIR with one URL)")
    chosen = [o for o, v in (("--report", args.report), ("--accept", args.accept)) if v]
    if chosen and not several and streamed:
        parser.error(
            f"{', '.join(chosen)}: with one URL, not with -o - or --extract "
            "(they apply to files saved by a download or a batch)"
        )


def _output_as_item(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`-o FILE` for one URL run as a batch: the batch's folder is FILE's, the item its name."""
    path = Path(args.output)
    name = path.name
    try:
        safe = str(safe_relative(name))
    except TemplateError:
        safe = ""
    if safe != name:
        # A batch sanitizes the names it is given; a different name than asked is no answer.
        becomes = f"would save it as {safe!r}" if safe else "cannot save it under that name"
        parser.error(
            f"-o {args.output}: with --report or --accept, give a plain file name "
            f"(a batch of one {becomes})"
        )
    args.dir = str(path.parent)
    args.output = None
    args.urls = [(args.urls[0], name)]


def _common(args: argparse.Namespace, verify: bool | str) -> dict[str, object]:
    """The options a single download and a batch share."""
    return {
        "connections": args.connections,
        "min_split": args.min_split,
        "headers": args.header,
        "timeout": args.timeout,
        "connect_timeout": args.connect_timeout,
        "retries": args.retries,
        "resume": not args.no_resume,
        "checksum": args.checksum,
        "verify": verify,
        "max_redirects": args.max_redirects,
        "location_trusted": args.location_trusted,
        "allow_downgrade": args.allow_downgrade,
        "trust_env": not args.no_proxy_env,
        "direct_io": not args.no_direct_io,
    }


def _single(args: argparse.Namespace, verify: bool | str, stderr: IO[str]) -> int:
    listener: TransferListener
    if not args.quiet and stderr.isatty():
        listener = TqdmListener(file=stderr)
    else:
        listener = _Warnings(stderr)
    if args.output == "-":
        return _to_stdout(args, verify, stderr, listener)
    try:
        result = download(
            args.urls[0],
            args.output,
            directory=args.dir,
            if_exists=args.if_exists or "error",
            listener=listener,
            **_common(args, verify),  # type: ignore[arg-type]
        )
    except UsageError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"segdl: {exc}", file=stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("segdl: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(summary(result), file=stderr)
    return EXIT_OK


EXIT_BROKEN_PIPE = 141  # as a shell reports a program killed by SIGPIPE


def _to_stdout(
    args: argparse.Namespace, verify: bool | str, stderr: IO[str], listener: TransferListener
) -> int:
    """`-o -`: the file in order on stdout; the bar and messages stay on stderr."""
    common = _common(args, verify)
    for key in ("resume", "direct_io"):
        common.pop(key)
    out = sys.stdout.buffer
    started = time.monotonic()
    written = 0
    try:
        with segdl_open(
            args.urls[0],
            window=args.window,
            listener=listener,
            **common,  # type: ignore[arg-type]
        ) as remote:
            chunk = bytearray(1 << 20)
            view = memoryview(chunk)
            while n := remote.readinto(chunk):
                out.write(view[:n])
                written += n
            out.flush()
    except BrokenPipeError:
        # The reader went away (`| head -c 100`): stop at once, quietly. Point stdout at
        # /dev/null so that the interpreter's last flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        print("segdl: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        # What was written cannot be taken back: a non-zero exit tells a pipefail pipeline.
        print(f"segdl: error: {exc} (after {written} bytes on stdout)", file=stderr)
        return EXIT_FAILED
    if not args.quiet:
        elapsed = time.monotonic() - started
        rate = written / elapsed if elapsed > 0 else 0.0
        print(
            f"segdl: {human_size(written)} to stdout in {elapsed:.2f} s, {human_size(rate)}/s",
            file=stderr,
        )
    return EXIT_OK


_MAX_LISTED = 20  # failed items listed on stderr; the rest are counted


def _batch(args: argparse.Namespace, verify: bool | str, stderr: IO[str]) -> int:
    if args.dask is not None or args.dask_scheduler_file is not None or args.shard_size:
        from .cluster import run as cluster_batch

        return cluster_batch(args, verify, stderr)
    extraction = None  # --extract: each archive extracted as it comes (archive/command.py)

    def start(items: object, listener: BatchListener) -> Iterable[ItemResult]:
        nonlocal extraction
        directory = args.dir
        if args.extract is not None:
            from .extract import BatchExtraction

            extraction = BatchExtraction(args)
            directory = extraction.download_dir
        options = batch_options(args, verify)
        if not _several(args):
            options["journal"] = False  # a batch of one keeps none, as `segdl URL` keeps none
        results = iter_download_many(
            items,  # type: ignore[arg-type]
            directory,
            listener=listener,
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
        "if_exists": args.if_exists or ("skip" if _several(args) else "error"),
        "journal": not args.no_journal,
        **_common(args, verify),
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
    if not args.quiet and stderr.isatty():
        listener = bar = TqdmBatchListener(file=stderr)
    else:
        listener = _Warnings(stderr)
    report: ReportWriter | None = None
    started = time.monotonic()
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    fetched = 0
    listed = 0
    stopped: DiskFullError | None = None
    try:
        if args.input_file is not None:
            items: object = read_manifest(
                args.input_file,
                format=args.input_format,
                url_field=args.url_field,
                records=args.records,
                # A field no record has would fail every item: the first record tells now.
                fields=Template.parse(args.template).record_fields,
            )
        else:
            items = args.urls
        if args.report:
            report = ReportWriter(Path(args.report))
        for result in start(items, listener):
            counts[result.status] += 1
            if result.result is not None:
                fetched += result.result.fetched
            if report is not None:
                report.write(_row(result, Path(args.dir) if args.dir else Path.cwd()))
            if result.status == "failed":
                listed += 1
                if listed <= _MAX_LISTED:
                    line = _failed_line(result)
                    if bar is not None:
                        bar.warning_line(line)
                    else:
                        print(line, file=stderr)
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
        if report is not None:
            report.close()
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


def _failed_line(result: ItemResult) -> str:
    """`#index URL: error`, naming the URL once: with mirrors the error names each URL."""
    error = result.error or "failed"
    if result.url and not error.startswith(f"{result.url}: "):
        error = f"{result.url}: {error}"
    return f"segdl: failed: #{result.index} {error}"


def _row(result: ItemResult, directory: Path) -> ReportRow:
    path = None
    if result.path is not None:
        try:
            path = result.path.relative_to(directory).as_posix()
        except ValueError:
            path = result.path.as_posix()
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
    )
