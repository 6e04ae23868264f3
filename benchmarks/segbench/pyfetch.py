"""The batch downloader people write: ThreadPool(16) and one requests.Session per thread.

    python pyfetch.py [--threads 16] LIST DIR

Reads LIST (one URL per line), GETs each URL and writes the body to DIR/<last path segment>.
Exits 1 if any download failed. It is a peer in the batch-small and batch-mixed scenarios,
not part of the harness; it imports nothing from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import urllib.parse
from multiprocessing.pool import ThreadPool

import requests

_local = threading.local()


def session() -> requests.Session:
    s: requests.Session | None = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


def fetch(url: str, out_dir: str) -> None:
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    response = session().get(url, timeout=60)
    response.raise_for_status()
    with open(os.path.join(out_dir, name), "wb") as out:
        out.write(response.content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("list")
    parser.add_argument("dir")
    opts = parser.parse_args()
    with open(opts.list) as lines:
        urls = [line.strip() for line in lines if line.strip()]
    os.makedirs(opts.dir, exist_ok=True)
    failed = 0
    with ThreadPool(opts.threads) as pool:
        results = [pool.apply_async(fetch, (url, opts.dir)) for url in urls]
        for url, result in zip(urls, results, strict=True):
            try:
                result.get()
            except Exception as exc:  # report every failure, keep going
                failed += 1
                print(f"{url}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
