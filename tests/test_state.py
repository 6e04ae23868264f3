"""Unit tests of segdl.core.state: the self-checked control file and its atomic save/load."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from segdl.core.state import FORMAT, VERSION, State, StateError, current_boot_id, load, save
from segdl.errors import DestinationError

SIZE = 1000
SEGMENTS = ((0, 100, 250), (250, 250, 500), (500, 1000, 1000))
DURABLE = ((0, 50, 250), (250, 250, 500), (500, 700, 1000))


def _state(**changes: Any) -> State:
    fields: dict[str, Any] = {
        "url": "https://example.com/file.bin",
        "size": SIZE,
        "etag": '"abc"',
        "last_modified": "Wed, 21 Oct 2015 07:28:00 GMT",
        "segments": SEGMENTS,
        "durable": DURABLE,
        "boot_id": "boot-1",
    }
    fields.update(changes)
    return State(**fields)


def _body(state: State) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(state.to_bytes())
    return body


def _seal(body: dict[str, Any]) -> bytes:
    """Serialise `body` with a correct checksum, the way a (buggy or hostile) writer might."""
    body = {k: v for k, v in body.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    body["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps(body).encode()


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_full() -> None:
    state = _state()
    assert State.from_bytes(state.to_bytes()) == state


def test_round_trip_without_durable_and_boot_id() -> None:
    state = _state(durable=None, boot_id=None, etag=None, last_modified=None)
    again = State.from_bytes(state.to_bytes())
    assert again == state
    assert again.durable is None
    assert again.boot_id is None


def test_round_trip_zero_size() -> None:
    state = _state(size=0, segments=((0, 0, 0),), durable=None)
    assert State.from_bytes(state.to_bytes()) == state


def test_round_trip_unicode_url() -> None:
    state = _state(url="https://example.com/caf\u00e9/\u20ac.bin")
    assert State.from_bytes(state.to_bytes()) == state


def test_to_bytes_is_json_with_checksum() -> None:
    body = _body(_state())
    assert body["format"] == FORMAT
    assert body["version"] == VERSION
    assert len(body["sha256"]) == 64


def test_done_bytes() -> None:
    assert _state().done_bytes == 100 + 0 + 500


# --- damaged or hostile input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\0" * 4096,
        b"\xff\xfe\x00garbage",
        b"null",
        b"[]",
        b"42",
        b'"segdl-state"',
        b"{}",
    ],
)
def test_from_bytes_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(StateError):
        State.from_bytes(raw)


def test_from_bytes_rejects_truncated_json() -> None:
    raw = _state().to_bytes()
    for cut in (1, len(raw) // 3, len(raw) // 2, len(raw) - 3):
        with pytest.raises(StateError):
            State.from_bytes(raw[:cut])


def test_from_bytes_rejects_random_bytes() -> None:
    rng = random.Random(1234)
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        with pytest.raises(StateError):
            State.from_bytes(raw)


def test_from_bytes_rejects_wrong_sha256() -> None:
    body = _body(_state())
    body["sha256"] = "0" * 64
    with pytest.raises(StateError, match="checksum"):
        State.from_bytes(json.dumps(body).encode())


def test_from_bytes_rejects_missing_sha256() -> None:
    body = _body(_state())
    del body["sha256"]
    with pytest.raises(StateError, match="checksum"):
        State.from_bytes(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", SIZE + 1),
        ("url", "https://example.com/other.bin"),
        ("etag", '"xyz"'),
        ("boot_id", "boot-2"),
        ("segments", [[0, 250, 250], [250, 500, 500], [500, 1000, 1000]]),
        ("durable", None),
    ],
)
def test_from_bytes_rejects_tampered_field(key: str, value: object) -> None:
    body = _body(_state())
    body[key] = value  # the checksum is not recomputed
    with pytest.raises(StateError, match="checksum"):
        State.from_bytes(json.dumps(body).encode())


def test_from_bytes_rejects_single_flipped_digit() -> None:
    raw = _state().to_bytes()
    index = raw.index(b'"size": 1000') + len(b'"size": ')
    tampered = raw[:index] + b"2" + raw[index + 1 :]
    with pytest.raises(StateError):
        State.from_bytes(tampered)


@pytest.mark.parametrize(
    ("key", "value"),
    [("format", "other-tool"), ("format", None), ("version", 1), ("version", 3), ("version", "2")],
)
def test_from_bytes_rejects_wrong_format_or_version(key: str, value: object) -> None:
    body = _body(_state())
    body[key] = value
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


def test_seal_helper_produces_accepted_bytes() -> None:
    # Guard for the tests below: a correctly sealed, unchanged body is accepted.
    state = _state()
    assert State.from_bytes(_seal(_body(state))) == state


@pytest.mark.parametrize(
    "segments",
    [
        pytest.param([[0, 0, 400], [500, 500, 1000]], id="gap"),
        pytest.param([[0, 0, 600], [500, 500, 1000]], id="overlap"),
        pytest.param([[0, 300, 250], [250, 250, 1000]], id="done-past-stop"),
        pytest.param([[0, 0, 250], [250, 100, 1000]], id="done-before-start"),
        pytest.param([[0, 0, 250], [250, 250, 999]], id="short-of-size"),
        pytest.param([[0, 0, 250], [250, 250, 1001]], id="past-size"),
        pytest.param([[10, 10, 1000]], id="not-from-zero"),
        pytest.param([[500, 500, 1000], [0, 0, 500]], id="out-of-order"),
    ],
)
@pytest.mark.parametrize("field", ["segments", "durable"])
def test_from_bytes_rejects_segments_that_do_not_tile(
    segments: list[list[int]], field: str
) -> None:
    body = _body(_state())
    body[field] = segments
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


def test_from_bytes_rejects_empty_segments() -> None:
    body = _body(_state())
    body["segments"] = []
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


def test_from_bytes_rejects_empty_durable() -> None:
    body = _body(_state())
    body["durable"] = []
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", "1000"),
        ("size", 1000.0),
        ("size", None),
        ("size", True),
        ("size", -1),
        ("url", 5),
        ("url", None),
        ("etag", 5),
        ("last_modified", ["x"]),
        ("boot_id", 1),
        ("segments", None),
        ("segments", 5),
        ("segments", "abc"),
        ("segments", {"0": [0, 0, 1000]}),
        ("segments", [[0, 0]]),
        ("segments", [[0, 0, 1000, 1000]]),
        ("segments", [[0, "0", 1000]]),
        ("segments", [[0, 0.0, 1000]]),
        ("segments", [[0, None, 1000]]),
        ("segments", [[False, False, 1000]]),
        ("segments", [[0, True, 1000]]),
        ("segments", ["0-1000"]),
        ("durable", 7),
        ("durable", [[0, True, 1000]]),
    ],
)
def test_from_bytes_rejects_wrong_types(key: str, value: object) -> None:
    body = _body(_state())
    body[key] = value
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


@pytest.mark.parametrize("key", ["url", "size", "segments"])
def test_from_bytes_rejects_missing_required_field(key: str) -> None:
    body = _body(_state())
    del body[key]
    with pytest.raises(StateError):
        State.from_bytes(_seal(body))


def test_from_bytes_rejects_deeply_nested_json() -> None:
    with pytest.raises(StateError):
        State.from_bytes(b"[" * 200_000)


# --- trusted_segments ----------------------------------------------------------------------


def test_trusted_segments_same_boot_trusts_all_writes() -> None:
    assert _state().trusted_segments("boot-1") == SEGMENTS


def test_trusted_segments_other_boot_trusts_durable_only() -> None:
    assert _state().trusted_segments("boot-2") == DURABLE
    assert _state().trusted_segments(None) == DURABLE


def test_trusted_segments_no_boot_id_recorded() -> None:
    state = _state(boot_id=None)
    assert state.trusted_segments(None) == DURABLE
    assert state.trusted_segments("boot-1") == DURABLE


def test_trusted_segments_other_boot_without_durable_trusts_nothing() -> None:
    state = _state(durable=None)
    assert state.trusted_segments("boot-2") == ((0, 0, SIZE),)
    assert state.trusted_segments(None) == ((0, 0, SIZE),)
    assert state.trusted_segments("boot-1") == SEGMENTS


# --- save / load ---------------------------------------------------------------------------


def test_save_then_load(tmp_path: Path) -> None:
    path = tmp_path / "file.bin.segdl"
    state = _state()
    save(path, state)
    assert load(path) == state
    assert path.read_bytes() == state.to_bytes()


def test_save_replaces_existing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin.segdl"
    save(path, _state())
    inode = path.stat().st_ino
    newer = _state(segments=((0, 250, 250), (250, 300, 500), (500, 1000, 1000)))
    save(path, newer)
    assert load(path) == newer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin.segdl"]
    assert path.stat().st_ino != inode  # a new file renamed over, not rewritten in place


def test_save_removes_stale_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "c.segdl"
    stale = tmp_path / f"c.segdl.{os.getpid()}.tmp"
    stale.write_bytes(b"left over by a crash")
    save(path, _state())
    assert load(path) == _state()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.segdl"]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_save_replaces_symlink_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = tmp_path / "c.segdl"
    path.symlink_to(victim)
    save(path, _state())
    assert victim.read_bytes() == b"precious"
    assert not path.is_symlink()
    assert load(path) == _state()


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_save_does_not_follow_symlink_at_temp_path(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = tmp_path / "c.segdl"
    (tmp_path / f"c.segdl.{os.getpid()}.tmp").symlink_to(victim)
    save(path, _state())
    assert victim.read_bytes() == b"precious"
    assert load(path) == _state()


@pytest.mark.skipif(sys.platform == "win32", reason="O_NOFOLLOW")
def test_load_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.segdl"
    save(real, _state())
    link = tmp_path / "link.segdl"
    link.symlink_to(real)
    with pytest.raises(StateError):
        load(link)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no control file"):
        load(tmp_path / "absent.segdl")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        load(tmp_path)


def test_load_refuses_file_over_16_mib(tmp_path: Path) -> None:
    path = tmp_path / "big.segdl"
    raw = _state().to_bytes()
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate((16 << 20) + 1)  # sparse: cheap to create
    with pytest.raises(StateError, match="too large"):
        load(path)


def test_load_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "c.segdl"
    save(path, _state())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StateError):
        load(path)
    path.write_bytes(b"\0" * len(raw))
    with pytest.raises(StateError):
        load(path)


def test_save_into_missing_directory_is_destination_error(tmp_path: Path) -> None:
    with pytest.raises(DestinationError):
        save(tmp_path / "no" / "such" / "c.segdl", _state())


# --- current_boot_id -------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="Linux boot_id needed"
)
def test_current_boot_id_on_linux() -> None:
    boot = current_boot_id()
    assert isinstance(boot, str)
    assert boot
    assert boot == boot.strip()
    assert current_boot_id() == boot
