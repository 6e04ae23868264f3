"""The tools: finding and installing them, their versions, and each one's command line.

segdl runs as ``sys.executable -m segdl`` (or ``--segdl-cmd``); the peers are found on PATH and
installed with apt-get when missing. "requests" is the ThreadPool + requests.Session script in
pyfetch.py, run with the same interpreter.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .records import Case
from .units import MiB, size_token

PEERS = ("aria2c", "axel", "curl")
CORE_TOOLS = ("segdl", *PEERS)  # set up whenever --tools names them, as before
EXTRA_TOOLS = ("wget2", "requests")  # set up only for scenarios that run them
TOOLS = (*CORE_TOOLS, *EXTRA_TOOLS)
BINARIES = {"aria2c": "aria2c", "axel": "axel", "curl": "curl", "wget2": "wget2"}
APT_PACKAGE = {
    "nginx": "nginx",
    "aria2c": "aria2",
    "axel": "axel",
    "curl": "curl",
    "time": "time",
    "wget2": "wget2",
}
ARIA2_MAX_CONNS = 16  # aria2c refuses -x above 16
ARIA2_MIN_SPLIT = MiB  # aria2c refuses -k below 1M
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
PYFETCH = Path(__file__).resolve().parent / "pyfetch.py"


@dataclass
class ToolInfo:
    name: str
    path: str | None
    version: str = ""
    version_full: str = ""
    note: str = ""


@dataclass(frozen=True)
class BatchInput:
    """The files a batch run reads: the URL list, and the same URLs as a curl config."""

    urls: Path
    curl_config: Path


def which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def apt_install(packages: Sequence[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or not which("apt-get"):
        print(f"  cannot install {' '.join(packages)}: need root and apt-get", flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"  installing {' '.join(packages)} with apt-get: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        print("  apt-get install failed; running apt-get update and retrying", flush=True)
        subprocess.run(["apt-get", "update"], env=env, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)


def first_line(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return ""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every tool: no proxies (loopback only)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


class Toolbox:
    """The tools of one harness run: what is installed, their versions and command lines."""

    def __init__(self, opts: argparse.Namespace, env: dict[str, str], dl_dir: Path) -> None:
        self.opts = opts
        self.env = env
        self.dl_dir = dl_dir
        self.tools: dict[str, ToolInfo] = {}
        self.notes: list[str] = []
        self.time_bin: str | None = None
        self.aria2_alloc: str = opts.aria2_file_allocation
        default_cmd = [sys.executable, "-m", "segdl"]  # the same interpreter as this script
        self.segdl_cmd = shlex.split(opts.segdl_cmd) if opts.segdl_cmd else default_cmd

    def available(self, tool: str) -> bool:
        info = self.tools.get(tool)
        return info is not None and info.path is not None

    def path(self, tool: str) -> str:
        path = self.tools[tool].path
        assert path is not None
        return path

    # -- setup ----------------------------------------------------------------------------

    def setup(self, scenario_tools: set[str]) -> None:
        """Install what is missing, then probe every tool that --tools names; the extra tools
        (wget2, requests) only when a selected scenario runs them."""
        print("== tools", flush=True)
        wanted = [
            t for t in self.opts.tools if t != "segdl" and (t in CORE_TOOLS or t in scenario_tools)
        ]
        needed = [BINARIES[t] for t in wanted if t in BINARIES]
        if self.opts.server in ("auto", "nginx"):
            needed.append("nginx")
        missing = [b for b in needed if not which(b)]
        if self.opts.rusage == "time" and not self._time_ok():
            missing.append("time")  # GNU time, for clean peak RSS figures
        if missing and not self.opts.no_install:
            apt_install([APT_PACKAGE[b] for b in missing])
        elif missing:
            print(f"  missing (not installing, --no-install): {' '.join(missing)}", flush=True)

        if self.opts.rusage == "time":
            if self._time_ok():
                self.time_bin = "/usr/bin/time"
            else:
                self.notes.append(
                    "GNU /usr/bin/time unavailable: peak RSS from os.wait4 (see README caveats)"
                )
        for tool in wanted:
            self.tools[tool] = self._probe_requests() if tool == "requests" else self._probe(tool)
        if "segdl" in self.opts.tools:
            self.tools["segdl"] = self._probe_segdl()
        for info in self.tools.values():
            state = info.version if info.path else f"SKIPPED: {info.note}"
            print(f"  {info.name:7s} {state}", flush=True)
        if "aria2c" in self.tools and self.tools["aria2c"].path and self.aria2_alloc == "auto":
            self.aria2_alloc = "falloc" if self._fallocate_works() else "none"

    def _probe(self, tool: str) -> ToolInfo:
        path = which(BINARIES[tool])
        info = ToolInfo(tool, path)
        if path:
            info.version_full = first_line([path, "--version"])
            info.version = info.version_full.split(" (")[0]
            if tool == "wget2":  # "GNU Wget2 1.99.1 - multithreaded metalink/file/website..."
                info.version = info.version.split(" - ")[0]
        else:
            info.note = "not installed"
        return info

    def _probe_requests(self) -> ToolInfo:
        code = "import requests; print('requests', requests.__version__)"
        version = first_line([sys.executable, "-c", code], self.env, self.dl_dir)
        if not version.startswith("requests "):
            return ToolInfo("requests", None, note=f"`import requests` failed: {version}")
        return ToolInfo("requests", str(PYFETCH), f"{version} (ThreadPool script)", version)

    def _time_ok(self) -> bool:
        try:
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "true"], capture_output=True, text=True, check=False
            )
        except OSError:
            return False
        return proc.returncode == 0 and proc.stderr.strip().isdigit()

    def _fallocate_works(self) -> bool:
        probe = self.dl_dir / ".fallocate-probe"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, MiB)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)

    def _probe_segdl(self) -> ToolInfo:
        info = ToolInfo("segdl", shlex.join(self.segdl_cmd))
        try:
            proc = subprocess.run(
                [*self.segdl_cmd, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=self.env,
                cwd=self.dl_dir,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc = None
            info.note = f"{shlex.join(self.segdl_cmd)} --help: {exc}"
        if proc is not None and proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            info.note = f"`{shlex.join(self.segdl_cmd)} --help` exited {proc.returncode}: {last}"
            if "No module named" in proc.stderr:
                info.note += " (install it: pip install -e /path/to/repo)"
        if info.note:
            info.path = None
            return info
        self._compile_segdl()
        version = first_line([*self.segdl_cmd, "--version"], self.env, self.dl_dir)
        if not re.search(r"[0-9]+\.[0-9]+", version):
            version = (
                first_line(
                    [
                        self.segdl_cmd[0],
                        "-c",
                        "import importlib.metadata as m; print('segdl', m.version('segdl'))",
                    ],
                    self.env,
                    self.dl_dir,
                )
                or "unknown version"
            )
        info.version = version
        return info

    def _compile_segdl(self) -> None:
        """Byte-compile segdl's package, as `pip install` does for a regular install.

        An editable install run with PYTHONDONTWRITEBYTECODE=1 (set on some machines) would
        otherwise compile every module from source on every run, a cost no user pays.
        """
        python = self.segdl_cmd[0]
        where = first_line(
            [python, "-c", "import os, segdl; print(os.path.dirname(segdl.__file__))"],
            self.env,
            self.dl_dir,
        )
        if not where or not Path(where).is_dir():
            return
        proc = subprocess.run(
            [python, "-m", "compileall", "-q", where],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )
        if proc.returncode == 0:
            self.notes.append(f"segdl's modules were byte-compiled first (`compileall {where}`)")

    # -- command lines --------------------------------------------------------------------

    def argv_for(self, case: Case, url: str, out: Path) -> list[str]:
        """One file: `url` saved as `out`."""
        split = self.opts.split
        if case.tool == "segdl":
            argv = [*self.segdl_cmd, url, "-o", str(out), "-n", str(case.conns)]
            argv += ["-k", size_token(split)]
            return [*argv, "-q"] if case.quiet else argv
        path = self.path(case.tool)
        if case.tool == "aria2c":
            n = min(case.conns, ARIA2_MAX_CONNS)
            return [
                path,
                "--no-conf=true",
                f"-x{n}",
                f"-s{n}",
                f"-k{size_token(max(split, ARIA2_MIN_SPLIT))}",
                f"--file-allocation={self.aria2_alloc}",
                f"--dir={out.parent}",
                f"--out={out.name}",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--quiet=true",
                "--summary-interval=0",
                url,
            ]
        if case.tool == "axel":
            return [path, "-q", "-n", str(case.conns), "-o", str(out), url]
        if case.tool == "curl":
            return [path, "-q", "--silent", "--show-error", "--fail", "-o", str(out), url]
        raise ValueError(case.tool)

    def batch_argv(self, case: Case, batch: BatchInput, out_dir: Path) -> list[str]:
        """A list of URLs, each saved under `out_dir` by its last path segment.

        `case.jobs` files are in flight at once; `case.conns` > 1 also splits each file
        (segdl -n, aria2c -x/-s with -k), and `case.max_conns` caps segdl's connections.
        Every URL is on one host, so segdl gets --per-host equal to its whole budget (its
        default, 8, would hold it below the peers' 16 connections).
        """
        jobs, n = case.jobs, case.conns
        if case.tool == "segdl":
            argv = [*self.segdl_cmd, "-i", str(batch.urls), "-d", str(out_dir), "-j", str(jobs)]
            if n > 1:
                argv += ["-n", str(n)]
            if case.max_conns:
                argv += ["--max-connections", str(case.max_conns)]
            argv += ["--per-host", str(case.max_conns or jobs)]
            return [*argv, "-q"]
        if case.tool == "aria2c":
            n = min(n, ARIA2_MAX_CONNS)
            split = [f"-k{size_token(max(self.opts.split, ARIA2_MIN_SPLIT))}"] if n > 1 else []
            return [
                self.path("aria2c"),
                "--no-conf=true",
                f"--input-file={batch.urls}",
                f"--dir={out_dir}",
                f"-j{jobs}",
                f"-x{n}",
                f"-s{n}",
                *split,
                f"--file-allocation={self.aria2_alloc}",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--console-log-level=warn",
                "--show-console-readout=false",
                "--download-result=hide",
                "--summary-interval=0",
            ]
        if case.tool == "curl":
            return [
                self.path("curl"),
                "-q",
                "--silent",
                "--show-error",
                "--fail",
                "--parallel",
                "--parallel-max",
                str(jobs),
                "--remote-name-all",
                "--output-dir",
                str(out_dir),
                "--config",
                str(batch.curl_config),
            ]
        if case.tool == "wget2":
            return [
                self.path("wget2"),
                "--no-config",
                "--quiet",
                f"--max-threads={jobs}",
                f"--input-file={batch.urls}",
                f"--directory-prefix={out_dir}",
            ]
        if case.tool == "requests":
            return [
                sys.executable,
                str(PYFETCH),
                "--threads",
                str(jobs),
                str(batch.urls),
                str(out_dir),
            ]
        raise ValueError(case.tool)

    def example_argvs(self) -> dict[str, str]:
        """One command line per tool for the report's tools table."""
        examples: dict[str, str] = {}
        url, out = "URL", Path("OUT")
        batch = BatchInput(Path("LIST"), Path("CURL_CONFIG"))
        for tool in self.tools:
            if not self.available(tool):
                continue
            if tool in EXTRA_TOOLS:
                case = Case("batch-small", tool, tool, 1, 0, jobs=self.opts.jobs)
                examples[tool] = shlex.join(self.batch_argv(case, batch, Path("DIR")))
                continue
            case = Case("unthrottled", tool, tool, 1 if tool == "curl" else self.opts.conns, 0)
            argv = self.argv_for(case, url, out)
            argv = [a.replace(f"--dir={out.parent}", "--dir=DIR") for a in argv]
            examples[tool] = shlex.join(argv)
        return examples
