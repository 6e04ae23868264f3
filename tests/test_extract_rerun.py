"""Loose ends of `--extract`: what the user keeps follows the umask, a finished extraction can be
run again (a no-op while its members are in place), the `--max-ratio` option, the folders of
`-i --extract` named as the template says."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rangeserver import Faults, RangeHTTPServer, serve_file
from test_archive_rules import make_tree, snapshot, tar_of, zip_of

import segdl


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


# -- the kept archive follows the umask (issue 15, item 8) --------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ranges"),
    [("tar.gz", True), ("zip", False), ("zip", True)],
    ids=["tar stream", "zip copied", "zip downloaded"],
)
def test_the_kept_archive_follows_the_umask(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    tree: Path,
    umask_022: None,
    fmt: str,
    ranges: bool,
) -> None:
    data = tar_of(tree, fmt) if fmt != "zip" else zip_of(tree, zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a", data, Faults(ignore_range=not ranges))
    kept = tmp_path / "kept.bin"
    segdl.extract(served.url, tmp_path / "out", keep_archive=kept, connections=2)
    assert kept.read_bytes() == data
    assert stat.S_IMODE(kept.stat().st_mode) == 0o644
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)
