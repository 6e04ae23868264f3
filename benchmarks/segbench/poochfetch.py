"""The way many data loaders fetch an archive: pooch.retrieve with its Untar or Unzip processor.

    python poochfetch.py URL CACHE_DIR OUT_DIR {tar,zip}

Downloads URL into CACHE_DIR (one requests stream), then extracts it into OUT_DIR. A peer in
the extract-* scenarios, not part of the harness; it imports nothing from it.
"""

from __future__ import annotations

import sys

import pooch


def main(argv: list[str]) -> int:
    url, cache, out, kind = argv
    processor = pooch.Untar(extract_dir=out) if kind == "tar" else pooch.Unzip(extract_dir=out)
    pooch.get_logger().setLevel("WARNING")  # no "downloading ..." lines, as the others are -q
    pooch.retrieve(url, known_hash=None, fname="archive", path=cache, processor=processor)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
