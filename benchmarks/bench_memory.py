"""Peak memory and time of the jobs a user runs first: the demo, the default training on
Flickr8k from a cold feature cache, a cold text search with the bundled model, and
``--help``; each beside a bare ``import torch, torchvision, transformers`` in the same run.

    python benchmarks/bench_memory.py --flickr8k ../shared/data/flickr8k --work runs/bench-memory

Each job runs in a fresh process; its peak resident memory is the largest ``ru_maxrss``
of the processes it waited for (the main process: decoding workers are smaller). Writes
one result file into benchmarks/results/.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, write_result  # noqa: E402

CROSSMODAL = [sys.executable, "-m", "crossmodal.cli"]


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Wall time and peak RSS (bytes) of one command in a fresh process."""
    import os

    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    pid = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    if status:
        raise SystemExit(f"{cmd} failed ({status})")
    return {"seconds": round(time.perf_counter() - t, 2), "peak_rss_bytes": usage.ru_maxrss * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flickr8k", required=True, help="Flickr8k's original release (../shared/data/flickr8k)")
    ap.add_argument("--work", default="runs/bench-memory")
    ap.add_argument("--skip-train", action="store_true", help="leave out the 15-minute training run")
    ap.add_argument("--skip-demo", action="store_true", help="leave out the demo")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the quick commands (the fastest is kept)")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "flickr8k"
    subprocess.run([sys.executable, str(ROOT / "data_scripts" / "prepare_flickr8k.py"), "--source", args.flickr8k,
                    "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    photos = work / "photos"
    photos.mkdir()
    for name in sorted((Path(args.flickr8k) / "images").iterdir())[:200]:
        shutil.copy(name, photos / name.name)

    def fastest(cmd: list[str], env: dict | None = None) -> dict:
        runs = [measure(cmd, env) for _ in range(args.repeats)]
        return min(runs, key=lambda r: r["seconds"])

    results = {"imports": fastest([sys.executable, "-c", "import torch, torchvision, transformers"]),
               "help": fastest(CROSSMODAL + ["--help"])}
    idx = work / "idx"
    results["index_build_200_photos"] = measure(CROSSMODAL + ["index", "build", "--images", str(photos),
                                                              "--out", str(idx)])
    query = CROSSMODAL + ["search", "--index", str(idx), "--text", "two dogs playing in the snow"]
    # the first text query with an empty cache exports the text encoder for ONNX Runtime (once a
    # machine); every later process, each a cold start, finds it there
    cache = {"CROSSMODAL_CACHE": str(work / "query-cache")}
    results["search_text_first_ever"] = measure(query, env=cache)
    results["search_text_cold"] = fastest(query, env=cache)
    results["search_text_ratio_to_imports"] = round(results["search_text_cold"]["seconds"]
                                                    / results["imports"]["seconds"], 3)
    if not args.skip_demo:
        results["demo"] = measure(CROSSMODAL + ["demo", "--out", str(work / "demo")],
                                  env={"CROSSMODAL_CACHE": str(work / "demo-cache")})
    if not args.skip_train:
        results["train_default_flickr8k_cold_cache"] = measure(
            CROSSMODAL + ["train", "--data", str(data), "--out", str(work / "model"), "--cache-dir",
                          str(work / "train-cache")])
    for name, r in results.items():
        print(f"{name}: {r}")
    full = not (args.skip_demo or args.skip_train)
    write_result("memory-and-start" if full else "start-time", "benchmark",
                 "train/test (Flickr8k) and the demo's data", results)


if __name__ == "__main__":
    main()
