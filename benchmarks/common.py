"""Helpers shared by the benchmark scripts: timing, memory, and result files (BENCHMARKS.md is rendered from them)."""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def best_of(fn, repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` runs (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def cache_bytes() -> int:
    """Bytes in the feature cache now (to report what a command added to it)."""
    from crossmodal.cache import default_cache_dir

    root = default_cache_dir()
    return sum(f.stat().st_size for f in root.glob("*.safetensors")) if root.is_dir() else 0


RESULTS_DIR = ROOT / "benchmarks" / "results"


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("+uncommitted" if dirty else "") if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict:
    """What ran it: CPU model and cores (numbers compare only within one machine)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"
    return {"cpu": model, "cores": os.cpu_count()}


def write_result(name: str, kind: str, split: str | None, metrics: dict, **extra) -> Path:
    """One JSON per run in benchmarks/results/: the raw metrics with the command, commit,
    date, split and machine that produced them (every published number comes from one)."""
    import datetime as dt
    import json

    date = dt.datetime.now(dt.timezone.utc)
    record = {"name": name, "kind": kind, "split": split, "command": command_line(), "commit": git_commit(),
              "date": date.isoformat(timespec="seconds"), "machine": machine(), **extra, "metrics": metrics}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{date.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"result written to {path.relative_to(ROOT)}")
    return path


def publish(name: str, title: str, split: str, metrics: dict, summary: str, kind: str = "benchmark",
            **extra) -> Path:
    """A benchmark's result file: its raw ``metrics`` beside the ``summary`` (Markdown)
    it made from them in the same run; ``python benchmarks/render.py`` puts the summary of
    the newest result of each ``name`` under ``title`` in BENCHMARKS.md."""
    return write_result(name, kind, split, metrics, title=title, summary=summary, **extra)


def bare_imports_seconds(repeats: int = 3) -> float:
    """The floor any command pays: ``import torch, torchvision, transformers`` in a fresh
    process, the fastest of ``repeats`` (timed commands are compared with it in one run)."""
    import subprocess
    import time

    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, torchvision, transformers"], check=True)
        best = min(best, time.perf_counter() - t)
    return best

