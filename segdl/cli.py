"""The `segdl` command: argparse, listener choice, one-line errors and exit codes.

Exit codes: 0 success, 1 failed download, 2 usage error, 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import IO, NoReturn

from . import __version__
from .api import download
from .engine import Result
from .errors import Interrupted, SegdlError, UsageError
from .options import IF_EXISTS, MAX_CONNECTIONS, parse_header, parse_size
from .progress import Listener, TqdmListener
from .transport import silence_insecure_warnings

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
        description="Download one file over several HTTP connections at once. "
        "Run 'segdl bench' to measure the speed-up on this machine.",
    )
    parser.add_argument("url", help="http:// or https:// URL to download")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="FILE", help="write to FILE")
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
        help="consecutive failures without progress tolerated per connection (default 5)",
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
        default="error",
        help="when the destination exists: error (default), skip, overwrite or rename",
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
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("--version", action="version", version=f"segdl {__version__}")
    return parser


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def summary(result: Result) -> str:
    """The one line printed after a download."""
    if result.skipped:
        return f"{result.path}: exists, skipped"
    rate = result.fetched / result.elapsed if result.elapsed > 0 else 0.0
    resumed = f", {_human(result.resumed)} resumed" if result.resumed else ""
    mode = f"{result.connections} connections" if result.segmented else "1 connection (stream)"
    return (
        f"{result.path}: {_human(result.size)} in {result.elapsed:.2f} s, "
        f"{_human(rate)}/s, {mode}{resumed}"
    )


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
    args = build_parser().parse_args(args_list)
    stderr = sys.stderr
    verify: bool | str = True
    if args.insecure:
        verify = False
        silence_insecure_warnings()
        print("segdl: warning: TLS certificate verification is off (--insecure)", file=stderr)
    elif args.ca_certificate:
        verify = args.ca_certificate
    listener: Listener
    if not args.quiet and stderr.isatty():
        listener = TqdmListener(file=stderr)
    else:
        listener = _Warnings(stderr)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = download(
            args.url,
            args.output,
            directory=args.dir,
            connections=args.connections,
            min_split=args.min_split,
            headers=args.header,
            timeout=args.timeout,
            connect_timeout=args.connect_timeout,
            retries=args.retries,
            resume=not args.no_resume,
            if_exists=args.if_exists,
            checksum=args.checksum,
            verify=verify,
            max_redirects=args.max_redirects,
            location_trusted=args.location_trusted,
            allow_downgrade=args.allow_downgrade,
            trust_env=not args.no_proxy_env,
            direct_io=not args.no_direct_io,
            listener=listener,
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
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(summary(result), file=stderr)
    return EXIT_OK
