"""The one destination policy (segdl.core.destination): what stands at a path, what the
if-exists policy makes of it, the free name next to it; the single download and the batch
decide the same way, with the same messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import fast_clock, payload
from rangeserver import RangeHTTPServer, serve_file

from segdl.api import download, download_many
from segdl.core.destination import free_name, settle, taken
from segdl.errors import DestinationError


def test_taken_sees_a_dangling_link(tmp_path: Path) -> None:
    assert not taken(tmp_path / "none")
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    assert taken(tmp_path / "link")


def test_settle_applies_each_policy(tmp_path: Path) -> None:
    free = tmp_path / "free.bin"
    assert all(settle(free, policy) == free for policy in ("error", "skip", "overwrite", "rename"))
    there = tmp_path / "x.bin"
    there.write_bytes(b"mine")
    (tmp_path / "x.1.bin.part").write_bytes(b"")  # a companion makes x.1.bin not free
    assert settle(there, "skip") is None
    assert settle(there, "overwrite") == there
    assert settle(there, "rename") == tmp_path / "x.2.bin"
    with pytest.raises(DestinationError, match=r"already exists \(use --overwrite"):
        settle(there, "error")
    (tmp_path / "d").mkdir()
    for policy in ("skip", "overwrite", "rename", "error"):
        with pytest.raises(DestinationError, match="is a directory"):
            settle(tmp_path / "d", policy)
    taken_by_other = {tmp_path / "x.2.bin"}
    assert free_name(there, lambda p: p not in taken_by_other) == tmp_path / "x.3.bin"


def test_one_message_for_an_existing_file_alone_or_in_a_batch(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(rangeserver, "/x.bin", payload(3000, seed=3))
    existing = tmp_path / "x.bin"
    existing.write_bytes(b"mine")
    with pytest.raises(DestinationError) as alone:
        download(served.url, directory=tmp_path, if_exists="error")
    (result,) = download_many(
        [served.url], tmp_path, if_exists="error", journal=False, clock=fast_clock()[0]
    )
    assert result.status == "failed"
    assert result.error is not None and result.error.endswith(str(alone.value))
    assert "--if-exists rename" in result.error
    assert existing.read_bytes() == b"mine"
