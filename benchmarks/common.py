"""Helpers shared by the benchmark scripts: timing, memory, and BENCHMARKS.md sections."""
from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


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


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``## name`` of BENCHMARKS.md."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\nEvery number here was printed by the command above it, on the project's 2-core CPU machine.\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.write_text(text)
    print(f"updated section '{name}' of {BENCHMARKS_MD}")


def cache_bytes() -> int:
    """Bytes in the feature cache now (to report what a command added to it)."""
    from crossmodal.cache import default_cache_dir

    root = default_cache_dir()
    return sum(f.stat().st_size for f in root.glob("*.safetensors")) if root.is_dir() else 0
