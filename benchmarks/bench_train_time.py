"""How long the default training takes, from a cold cache: ``crossmodal train --data
data/flickr8k`` in a fresh process with an empty ``$CROSSMODAL_CACHE`` (no cached features,
no exported graphs), as a new user runs it.

Reported: the wall time and where it goes (the trainer's own phase times: features,
steps, validation, checkpoints, writing; the rest is start-up and screening), the peak
memory of the process (ru_maxrss), the bare import of torch + torchvision + transformers
in the same run (the floor), and the dev score the run kept. Extra arguments after
``--`` go to ``crossmodal train`` (to time another recipe).

    python benchmarks/bench_train_time.py --data runs/data/flickr8k
    python benchmarks/bench_train_time.py --data runs/data/flickr8k --warm   # features cached: head training only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import bare_imports_seconds, publish  # noqa: E402


def compare_with_card(model_dir: Path, data: str) -> dict:
    """The rebuilt model's 64-bit test R@10 both ways beside the bundled card's, heads stored
    as the card's are."""
    from crossmodal.model import CrossModalHasher
    from crossmodal.pretrained import model_card
    from retrieval.evaluation import evaluate_prepared

    card = model_card()
    with tempfile.TemporaryDirectory() as tmp:
        CrossModalHasher.from_pretrained(model_dir).save_pretrained(tmp, heads_dtype=card["heads_dtype"])
        report = evaluate_prepared(CrossModalHasher.from_pretrained(tmp), data, "test", bits=[64], baselines=False,
                                   n_examples=0).report
    rebuilt = {d: round(report["results"][d]["64"]["R@10"], 2) for d in ("i2t", "t2i")}
    on_card = {d: card["test"]["metrics"]["64"][d]["R@10"] for d in ("i2t", "t2i")}
    return {"rebuilt": rebuilt, "card": on_card, "card_fingerprint": card["fingerprint"],
            "difference": {d: round(rebuilt[d] - on_card[d], 2) for d in rebuilt}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared Flickr8k (data_scripts/prepare_flickr8k.py)")
    ap.add_argument("--warm", action="store_true", help="use the usual cache (features already there)")
    ap.add_argument("--keep", default=None, help="keep the trained model in this folder")
    ap.add_argument("--compare-card", action="store_true",
                    help="also measure the model on test at 64 bits and compare it with the bundled model's card "
                         "(the rebuild check: the card's recipe must give the card's numbers)")
    ap.add_argument("train_args", nargs="*", help="more `crossmodal train` arguments (after --)")
    args = ap.parse_args()
    imports = bare_imports_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if not args.warm:
            env["CROSSMODAL_CACHE"] = str(Path(tmp) / "cache")
        out = Path(args.keep) if args.keep else Path(tmp) / "model"
        cmd = [sys.executable, "-m", "crossmodal.cli", "train", "--data", args.data, "--out", str(out),
               *args.train_args]
        log = Path(tmp) / "train.log"
        t = time.perf_counter()
        with log.open("w") as f:
            subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        summary = json.loads((out / "train_summary.json").read_text())
        rebuild = compare_with_card(out, args.data) if args.compare_card else None
    phases = summary["timings"]
    other = seconds - sum(phases.values())
    metrics = {"train_s": round(seconds, 1), "bare_imports_s": round(imports, 2), "peak_rss_bytes": peak,
               "phases_s": {**phases, "start_and_screening_s": round(other, 1)}, "cache": "warm" if args.warm else
               "cold", "best_epoch": summary["best_epoch"], "epochs_run": summary.get("epochs_run"),
               "dev_score": round(summary["best_score"], 3), "saved_dev_score": round(summary["saved_score"], 3),
               "train_command": "crossmodal train --data DATA --out OUT " + shlex.join(args.train_args)}
    if rebuild:
        metrics["rebuild_vs_card"] = rebuild
    parts = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in metrics["phases_s"].items())
    text = (f"`crossmodal train --data data/flickr8k{(' ' + shlex.join(args.train_args)) if args.train_args else ''}`"
            f" from a {metrics['cache']} cache: **{seconds / 60:.1f} min** on this machine, peak "
            f"{peak / 2**30:.2f} GiB ({parts}); best epoch {summary['best_epoch']}, dev score "
            f"{summary['best_score']:.2f}. The bare import of torch + torchvision + transformers took "
            f"{imports:.1f} s in the same run.")
    if rebuild:
        text += (" Rebuild check against the bundled model's card, 64-bit test R@10 image→text / text→image: "
                 f"rebuilt {rebuild['rebuilt']['i2t']:.1f} / {rebuild['rebuilt']['t2i']:.1f}, card "
                 f"{rebuild['card']['i2t']:.1f} / {rebuild['card']['t2i']:.1f}.")
    publish("train-time", "Training the default model: time and memory", "dev", metrics, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
