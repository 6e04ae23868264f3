"""What a run is (Case), what it measured (RunRecord), the medians per case (Summary) and the
verdict on a target (Check). These are what results.json holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    scenario: str
    label: str
    tool: str
    conns: int  # -n (segdl), -x/-s (aria2c), -n (axel); 1 for curl
    size: int  # bytes of the file, or of all files of a batch
    use_pty: bool = False
    quiet: bool = True
    jobs: int = 0  # batch scenarios: files in flight (segdl -j, aria2c -j, ...)
    max_conns: int = 0  # batch-mixed: segdl --max-connections


@dataclass
class RunRecord:
    scenario: str
    label: str
    tool: str
    conns: int
    size: int
    repeat: int
    seq: int
    started_at: str
    argv: list[str]
    ok: bool
    error: str | None
    exit_code: int | None
    wall_s: float
    user_s: float
    sys_s: float
    cpu_s: float
    maxrss_kib: int | None
    throughput_mib_s: float | None
    requests: int | None
    connections: int | None
    served_bytes: int | None
    server_window_s: float | None
    tty_bytes: int | None
    loadavg_before: float
    loadavg_after: float
    output_tail: str = ""
    # Batch scenarios only (left out of results.json when unset):
    files: int | None = None  # files in the list
    first_request_s: float | None = None  # process start to the server's first request
    items: int | None = None  # batch-list: bodies served before the tool was stopped
    stopped: str | None = None  # batch-list: why the tool was stopped
    protocols: dict[str, int] | None = None  # req-*: requests per protocol (nginx's log)


@dataclass
class Summary:
    scenario: str
    label: str
    tool: str
    conns: int
    size: int
    runs: int
    ok_runs: int
    status: str
    errors: list[str] = field(default_factory=list)
    wall_s: float | None = None
    wall_min_s: float | None = None
    wall_max_s: float | None = None
    throughput_mib_s: float | None = None
    cpu_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    maxrss_mib: float | None = None
    maxrss_max_mib: float | None = None
    requests: float | None = None
    connections: float | None = None
    served_mib: float | None = None
    server_window_s: float | None = None
    tty_bytes: float | None = None
    ideal_mib_s: float | None = None
    wall_vs_aria2c: float | None = None
    cpu_vs_aria2c: float | None = None
    speedup_vs_n1: float | None = None
    server_speedup_vs_n1: float | None = None
    # Newer scenarios only (left out of results.json when unset):
    files: int | None = None
    ideal_s: float | None = None  # noburst, batch-mixed: the throttle-bound time
    wall_vs_ideal: float | None = None
    first_request_s: float | None = None
    first_request_max_s: float | None = None
    items: float | None = None
    items_per_s: float | None = None
    protocols: str | None = None  # req-*: the protocols nginx logged, comma separated


@dataclass
class Check:
    id: str
    target: str
    measured: str
    result: str  # PASS, MISS, FAIL (a run failed), SKIP (no data)
    margin: str
    margin_value: float | None = None


# Fields added with the newer scenarios: omitted from the JSON when None, so the records of the
# original scenarios keep exactly their earlier shape.
_OPTIONAL = {
    "files",
    "first_request_s",
    "first_request_max_s",
    "items",
    "items_per_s",
    "stopped",
    "ideal_s",
    "wall_vs_ideal",
    "protocols",
}


def to_json(obj: RunRecord | Summary) -> dict[str, Any]:
    return {k: v for k, v in asdict(obj).items() if not (k in _OPTIONAL and v is None)}
