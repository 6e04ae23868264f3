"""Charts, when matplotlib can be imported (``pip install -e '.[bench]'``); PNGs in --out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checks import TARGET_RSS
from .records import Summary
from .scenarios import SCENARIOS
from .servers import ManagedServer
from .tools import TOOLS
from .units import MiB, approx_size, human_count, human_size


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_charts(
    out_dir: Path,
    rows: list[Summary],
    servers: dict[str, ManagedServer],
    sizes: Callable[[str], list[int]],
    scenarios: list[str],
) -> list[Path]:
    for name in SCENARIOS:  # never leave a chart of an earlier run next to these results
        (out_dir / f"{name}.png").unlink(missing_ok=True)
    if not has_matplotlib():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: list[Path] = []
    ok = [r for r in rows if r.status == "ok"]
    if "throttled" in scenarios:
        size = sizes("throttled")[0]
        seg = sorted(
            (r for r in ok if r.scenario == "throttled" and r.tool == "segdl" and r.size == size),
            key=lambda r: r.conns,
        )
        peers = [r for r in ok if r.scenario == "throttled" and r.tool != "segdl"]
        if seg or peers:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            rate = servers["throttled"].rate / MiB
            xs = sorted({r.conns for r in seg + peers})
            ax.plot(xs, [x * rate for x in xs], "k--", label=f"ideal n x {rate:g} MiB/s")
            if seg:
                ax.plot(
                    [r.conns for r in seg],
                    [r.throughput_mib_s or 0.0 for r in seg],
                    "o-",
                    label="segdl",
                )
            for tool, marker in (("aria2c", "s"), ("axel", "^"), ("curl", "D")):
                pts = sorted((r for r in peers if r.tool == tool), key=lambda r: r.conns)
                if pts:
                    ax.plot(
                        [r.conns for r in pts],
                        [r.throughput_mib_s or 0.0 for r in pts],
                        marker,
                        linestyle=":" if len(pts) > 1 else "none",
                        label=tool,
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel("connections")
            ax.set_ylabel("throughput (MiB/s, median)")
            ax.set_title(f"Throttled {rate:g} MiB/s per connection, {human_size(size)}")
            ax.grid(True, alpha=0.3)
            ax.legend()
            charts.append(_save(fig, out_dir / "throttled.png"))
    for scenario in ("stragglers", "unthrottled", "overhead", "noburst"):
        if scenario not in scenarios:
            continue
        srows = sorted(
            (r for r in ok if r.scenario == scenario), key=lambda r: (TOOLS.index(r.tool), r.label)
        )
        if not srows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        labels = [r.label for r in srows]
        ax1.bar(labels, [r.wall_s or 0 for r in srows], color="tab:blue")
        ax1.set_ylabel("wall time (s, median)")
        ax2.bar(labels, [r.cpu_s or 0 for r in srows], color="tab:orange")
        ax2.set_ylabel("CPU user+sys (s, median)")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", rotation=30)
            ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle(f"{scenario} ({human_size(srows[0].size)})")
        charts.append(_save(fig, out_dir / f"{scenario}.png"))
    if "memory" in scenarios:
        mrows = [r for r in ok if r.scenario == "memory"]
        if mrows:
            fig, ax = plt.subplots(figsize=(7, 4))
            msizes = sizes("memory")
            tools = [t for t in TOOLS if any(r.tool == t for r in mrows)]
            width = 0.8 / max(1, len(msizes))
            for i, size in enumerate(msizes):
                vals = []
                for tool in tools:
                    match = [r for r in mrows if r.tool == tool and r.size == size]
                    vals.append(match[0].maxrss_max_mib or 0 if match else 0)
                ax.bar(
                    [j + i * width for j in range(len(tools))], vals, width, label=human_size(size)
                )
            ax.axhline(
                TARGET_RSS / MiB,
                color="red",
                linestyle="--",
                label=f"target {human_size(TARGET_RSS)}",
            )
            ax.set_xticks([j + width * (len(msizes) - 1) / 2 for j in range(len(tools))], tools)
            ax.set_ylabel("peak RSS (MiB, max over runs)")
            ax.set_title("Peak RSS, unthrottled")
            ax.legend()
            ax.grid(True, axis="y", alpha=0.3)
            charts.append(_save(fig, out_dir / "memory.png"))
    if "batch-small" in scenarios:
        chart = batch_small_chart(plt, out_dir, [r for r in ok if r.scenario == "batch-small"])
        if chart is not None:
            charts.append(chart)
    return charts


def batch_small_chart(plt: Any, out_dir: Path, rows: list[Summary]) -> Path | None:
    """Median wall time per tool, fastest at the top."""
    rows = sorted((r for r in rows if r.wall_s), key=lambda r: r.wall_s or 0.0, reverse=True)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    walls = [r.wall_s or 0.0 for r in rows]
    colors = ["tab:green" if r.tool == "segdl" else "tab:blue" for r in rows]
    ax.barh([r.label for r in rows], walls, color=colors)
    for y, wall in enumerate(walls):
        ax.text(wall, y, f" {wall:.2f} s", va="center")
    ax.set_xlim(0, max(walls) * 1.2)
    ax.set_xlabel("wall time (s, median, whole process)")
    files = human_count(rows[0].files or 0)
    ax.set_title(f"batch-small: {files} files, {approx_size(rows[0].size)} in all")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_dir / "batch-small.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
