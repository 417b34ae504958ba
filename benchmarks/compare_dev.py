"""Compare trained models on the split that chooses: their dev validation at the epoch
each run kept (what the trainer selected on), written as an ablation result file.

    python benchmarks/compare_dev.py --name head-width runs/models/f8k-h1024 runs/models/f8k-h2048
    python benchmarks/compare_dev.py --name recipe default=runs/r0,runs/r1,runs/r2 fast=runs/f0,runs/f1,runs/f2

The dev numbers are the trainer's own validation (64-bit codes, R@1/5/10 both ways, and
the score that picks the best epoch); test is measured once, for the configuration chosen.
``NAME=RUN,RUN,...`` makes one row of several seeds of one recipe: each seed's values are
kept, with their mean and standard deviation (differences between recipes smaller than the
seeds' spread decide nothing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402

KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "score")


def dev_row(folder: Path) -> dict:
    summary = json.loads((folder / "train_summary.json").read_text())
    epochs = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines() if line.strip()]
    # a log written before the trainer started a fresh log per run may hold an earlier run: keep the last one
    epochs = epochs[max(i for i, e in enumerate(epochs) if e["epoch"] == 1 or i == 0):]
    best = next(e for e in epochs if e["epoch"] == summary["best_epoch"])
    config = json.loads((folder / "config.json").read_text())
    return {"best_epoch": summary["best_epoch"], "epochs_run": len(epochs), "head": config["head"],
            "epochs_wall_s": epochs[-1]["time_s"],
            "epochs_planned": summary["train_config"]["epochs"],
            "image_encoder": config["image_encoder"]["name"], "text_encoder": config["text_encoder"]["name"],
            **{k: round(best[f"val_{k}"], 3) for k in KEYS}}


def seed_row(folders: list[Path]) -> dict:
    """One recipe over seeds: each run's row, and the mean and std of every number."""
    runs = [dev_row(f) for f in folders]
    seeds = [json.loads((f / "train_summary.json").read_text())["train_config"]["seed"] for f in folders]
    out = {k: runs[0][k] for k in ("head", "image_encoder", "text_encoder", "epochs_planned")}
    for k in (*KEYS, "best_epoch", "epochs_run", "epochs_wall_s"):
        values = [r[k] for r in runs]
        out[k] = {"mean": round(float(np.mean(values)), 3), "std": round(float(np.std(values)), 3),
                  "per_seed": values}
    out["seeds"] = seeds
    out["train_config"] = json.loads((folders[0] / "train_summary.json").read_text())["train_config"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="what the runs vary (the result's name: ablation-NAME)")
    ap.add_argument("--chosen", default=None,
                    help="the row chosen (a default follows it; recorded in the result, tests check the defaults)")
    ap.add_argument("--note", default=None, help="why that row (recorded in the result)")
    ap.add_argument("models", nargs="+", help="model folders, or NAME=FOLDER,FOLDER,... (one recipe, several seeds)")
    args = ap.parse_args()
    rows = {}
    for spec in args.models:
        if "=" in spec:
            name, folders = spec.split("=", 1)
            rows[name] = seed_row([Path(f) for f in folders.split(",")])
        else:
            rows[Path(spec).name] = dev_row(Path(spec))
    for name, row in rows.items():
        print(name, {k: row[k] for k in ("best_epoch", "score", "i2t_R@10", "t2i_R@10")})
    if args.chosen is not None and args.chosen not in rows:
        raise SystemExit(f"--chosen {args.chosen!r} is not one of the rows {sorted(rows)}")
    extra = {"chosen": args.chosen, "note": args.note} if args.chosen else {}
    write_result(f"ablation-{args.name}", "ablation", "dev", rows, **extra)


if __name__ == "__main__":
    main()
