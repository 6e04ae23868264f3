"""What every command of the CLI shares: exit codes, argparse value types, the one-line
warnings when there is no bar, the summary line of a download, printing after a bar."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from typing import IO, NoReturn, Protocol

from ..api import Listener
from ..core.cookies import Cookies, load_cookie_file, parse_cookie_string
from ..core.options import MAX_CONNECTIONS, parse_accept, parse_header, parse_rate, parse_size
from ..core.units import human_size, plural
from ..core.verify import Checksum, read_checksums
from ..errors import UsageError
from ..file import Result
from ..progress import REPORTS, ProgressReport

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class Warnings(Listener):
    """No bar: warnings still reach the user, one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def warning(self, message: str) -> None:
        print(f"segdl: warning: {message}", file=self.stream)


def arg_connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CONNECTIONS}")
    return value


def arg_size(text: str) -> int:
    try:
        value = parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def arg_rate(text: str) -> int:
    try:
        return parse_rate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError("must be between 1 and 1024")
    return value


def arg_accept(text: str) -> tuple[str, ...]:
    try:
        return parse_accept(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def arg_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def arg_checksums(text: str) -> dict[str, Checksum]:
    try:
        return read_checksums(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_cookies(text: str) -> Cookies:
    try:
        return parse_cookie_string(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arg_cookie_file(text: str) -> Cookies:
    try:
        return load_cookie_file(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


EXIT_BROKEN_PIPE = 141  # as a shell reports a program killed by SIGPIPE


PROGRESS_MODES = ("bar", "lines", "json", "none")


def progress_mode(args: argparse.Namespace, stderr: IO[str]) -> str:
    """`--progress` as given; else none with -q, a bar on a terminal, lines elsewhere."""
    if args.progress is not None:
        return str(args.progress)
    if args.quiet:
        return "none"
    return "bar" if stderr.isatty() else "lines"


def progress_report(args: argparse.Namespace, stderr: IO[str]) -> ProgressReport | None:
    """The report of `--progress lines` or `json` on stderr, None for the other modes."""
    kind = REPORTS.get(progress_mode(args, stderr))
    return kind(stderr) if kind is not None else None


@contextlib.contextmanager
def reporting(report: ProgressReport | None) -> Iterator[None]:
    """Writes the report's final line when the job ends, before its summary; a job that
    raises ends with its error line alone (errors are one line)."""
    try:
        yield
    except BaseException:
        if report is not None:
            report.close(final=False)
        raise
    if report is not None:
        report.close()


def several_items(args: argparse.Namespace) -> bool:
    """Whether the command names several items (URLs or -i) rather than one URL. One URL
    keeps the rules of one download (--if-exists error, no --template) however it runs."""
    return args.input_file is not None or len(args.urls) > 1
