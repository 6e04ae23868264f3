"""The `segdl` argument parser, and the checks of what applies to what (an option that cannot
apply to the command given is a usage error naming the option and what it needs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._version import __version__
from ..batch.manifest import FORMATS
from ..batch.template import TemplateError, safe_relative
from ..core.http import describe as describe_transports
from ..core.options import IF_EXISTS, MAX_CONNECTIONS
from .common import (
    PROGRESS_MODES,
    Parser,
    arg_accept,
    arg_checksums,
    arg_connections,
    arg_cookie_file,
    arg_cookies,
    arg_count,
    arg_header,
    arg_positive,
    arg_rate,
    arg_seconds,
    arg_size,
)


class _Version(argparse.Action):
    """`--version`: segdl's version, and which transports this installation has (argparse's
    own version action would reflow the two lines into one)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(f"segdl {__version__}\n{describe_transports()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        type=arg_connections,
        default=8,
        metavar="N",
        help=f"connections, 1..{MAX_CONNECTIONS} (default 8)",
    )
    parser.add_argument(
        "-k",
        "--min-split",
        type=arg_size,
        default=1 << 20,
        metavar="SIZE",
        help="smallest range per connection, with K/M/G suffixes (default 1M)",
    )
    parser.add_argument(
        "-H",
        "--header",
        type=arg_header,
        action="append",
        default=[],
        metavar="'Name: value'",
        help="extra request header (repeatable); not sent to other origins after a redirect",
    )
    parser.add_argument(
        "--timeout",
        type=arg_seconds,
        default=30.0,
        metavar="SECONDS",
        help="longest silence tolerated from the server (default 30)",
    )
    parser.add_argument(
        "--connect-timeout", type=arg_seconds, default=15.0, metavar="SECONDS", help="(default 15)"
    )
    parser.add_argument(
        "--retries",
        type=arg_count,
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
        "--max-redirects", type=arg_count, default=10, metavar="N", help="(default 10)"
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
    versions = parser.add_mutually_exclusive_group()
    versions.add_argument(
        "--http1.1",
        dest="http_version",
        action="store_const",
        const="1.1",
        default="auto",
        help="speak HTTP/1.1 only (default: HTTP/2 over TLS where the server offers it)",
    )
    versions.add_argument(
        "--http2",
        dest="http_version",
        action="store_const",
        const="2",
        help="ask for HTTP/2 (also on plain http, by upgrade)",
    )
    parser.add_argument(
        "--streams",
        type=arg_positive,
        default=32,
        metavar="N",
        help="HTTP/2 requests at once on one connection (default 32; the server may allow "
        "fewer); --per-host still counts connections",
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "curl", "python"),
        default="auto",
        help="who sends requests: libcurl (curl), requests and sockets (python), or "
        "libcurl where it is installed (auto, the default)",
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
    # Checksums from a manifest, cookies and identity (issue 19).
    parser.add_argument(
        "--checksum-field",
        metavar="NAME",
        help="with -i (csv, tsv, json, jsonl): verify each item against the digest in its "
        "field NAME (sha256:HEX, md5=HEX, or bare hex)",
    )
    parser.add_argument(
        "--checksums",
        type=arg_checksums,
        metavar="FILE",
        help="verify each file against its line in FILE (sha256sum/md5sum format), matched "
        "by its path relative to -d",
    )
    parser.add_argument(
        "--user-agent",
        metavar="STRING",
        help=f"the User-Agent header (default segdl/{__version__})",
    )
    parser.add_argument(
        "-b",
        "--cookie",
        type=arg_cookies,
        action="append",
        default=[],
        metavar="'NAME=VALUE; ...'",
        help="cookies for the URL's origin (repeatable); never sent elsewhere after a redirect",
    )
    parser.add_argument(
        "--load-cookies",
        type=arg_cookie_file,
        metavar="FILE",
        help="send the cookies of FILE (Netscape format, as curl, wget and aria2c read) to "
        "the domains and paths they belong to",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="send every request through this proxy: http://, https://, socks5:// or "
        "socks5h:// (remote DNS), credentials in the URL (user:password@host:port)",
    )
    parser.add_argument(
        "--noproxy",
        metavar="HOSTS",
        help="comma-separated hosts, domains (with their subdomains), IP addresses or CIDR "
        "blocks, each with an optional :port, reached without a proxy; '*' for all",
    )
    parser.add_argument(
        "--limit-rate",
        type=arg_rate,
        metavar="RATE",
        help="at most RATE bytes per second in all, every connection and file together "
        "(K/M/G suffixes, 1024 multiples, e.g. 500K, 20M)",
    )
    parser.add_argument(
        "--limit-rate-per-host",
        type=arg_rate,
        metavar="RATE",
        help="at most RATE bytes per second from each host",
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
        "-j",
        "--jobs",
        type=arg_positive,
        default=16,
        metavar="N",
        help="files at once (default 16)",
    )
    batch.add_argument(
        "--max-connections",
        type=arg_positive,
        metavar="N",
        help="connections in all (default: the larger of -j and -n)",
    )
    batch.add_argument(
        "--per-host", type=arg_positive, default=8, metavar="N", help="connections to one host (8)"
    )
    batch.add_argument(
        "--accept",
        type=arg_accept,
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
        type=arg_size,
        metavar="SIZE",
        help="with -o - (or --extract DIR, one URL): bytes fetched ahead of the reader "
        "(default 64M)",
    )
    from .extract import add_arguments as add_extract_arguments

    add_extract_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        help="bar (default on a terminal), lines (default otherwise: a line every 10 s and at "
        "the end), json (an object a line every second and at the end) or none (as -q, but "
        "the summary stays); all on stderr",
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="show the version and the transports"
    )
    return parser


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace, several: bool) -> None:
    """Options that would do nothing here are usage errors naming what they need."""
    for option, given in (
        ("--input-format", args.input_format is not None),
        ("--url-field", args.url_field is not None),
        ("--records", args.records is not None),
        ("--checksum-field", args.checksum_field is not None),
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
    chosen = [
        o
        for o, v in (
            ("--report", args.report),
            ("--accept", args.accept),
            ("--checksums", args.checksums),
        )
        if v
    ]
    if chosen and not several and streamed:
        parser.error(
            f"{', '.join(chosen)}: with one URL, not with -o - or --extract "
            "(they apply to files saved by a download or a batch)"
        )


def output_as_item(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
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
