"""How long the README's first command takes: ``crossmodal demo`` on a fresh folder.

In one run: the bare import of torch, torchvision and transformers in a fresh process
(the floor any command pays), then the demo in a fresh process and folder with an empty
feature cache, as ``make demo`` runs it after the install. Reported: the demo's wall
time, its steps (from the demo's own timing file), the ratio to the bare import, and its
test mAP (the quality it must keep).

    python benchmarks/bench_demo.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import bare_imports_seconds, publish  # noqa: E402


def wall(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def main() -> int:
    imports = bare_imports_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        env = {**__import__("os").environ, "CROSSMODAL_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
        log = Path(tmp) / "demo.log"
        with log.open("w") as f:
            seconds = wall([sys.executable, "-m", "crossmodal.cli", "demo", "--out", str(out)], stdout=f,
                           stderr=subprocess.STDOUT, env=env)
        timing = json.loads((out / "report" / "timing.json").read_text())
        report = json.loads((out / "report" / "report.json").read_text())
    results = report["results"]
    maps = {d: {b: round(results[d][b]["mAP"], 4) for b in results[d]} for d in ("i2t", "t2i")}
    lsh = {d: {b: round(report["baselines"]["lsh"][d][b]["mAP"], 4) for b in results[d]} for d in ("i2t", "t2i")}
    metrics = {"demo_s": round(seconds, 1), "bare_imports_s": round(imports, 2),
               "ratio_to_imports": round(seconds / imports, 1), "steps_s": timing["steps_seconds"],
               "test_mAP": maps, "lsh_mAP": lsh}
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in timing["steps_seconds"].items())
    summary = (f"`crossmodal demo` in a fresh folder with an empty feature cache: **{seconds:.0f} s** "
               f"({seconds / imports:.0f}x the {imports:.1f} s bare import of torch + torchvision + transformers "
               f"in the same run). Steps: {steps}. Test mAP at the longest code: image→text "
               f"{max(maps['i2t'].items(), key=lambda kv: int(kv[0]))[1]:.3f}, text→image "
               f"{max(maps['t2i'].items(), key=lambda kv: int(kv[0]))[1]:.3f} (LSH of the same outputs: "
               f"{max(lsh['i2t'].items(), key=lambda kv: int(kv[0]))[1]:.3f} / "
               f"{max(lsh['t2i'].items(), key=lambda kv: int(kv[0]))[1]:.3f}).")
    publish("demo-time", "The demo's time (make demo)", "test", metrics, summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
