"""Ablation: which part of the design earns what. Each row is one `crossmodal train`
(the exact command is printed in the table) followed by `crossmodal eval` on the **dev**
split: choices are made on dev, and the test split is measured once, for the default
(``bench_quality.py``). Writes one result file (``kind: ablation``, ``split: dev``).

    python benchmarks/bench_ablation.py flickr8k --data /tmp/data/flickr8k --work /tmp/ablation
    python benchmarks/bench_ablation.py fashion --data /tmp/data/fashion --work /tmp/ablation --rows default,finetune

Rows build up the loss one family at a time (inter-modal contrastive alone; + intra-modal;
+ quantization and balance terms, which is the shipped default), then vary one lever of
the default (triplet terms, quantization weight, straight-through share, captions per
step), and compare the frozen backbones with a fine-tuned last CNN stage. Models already trained in WORK are
reused (``--retrain`` to train again), so an interrupted run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cache_bytes, publish  # noqa: E402

OFF = {"intra_image": 0, "intra_text": 0, "triplet": 0, "intra_triplet": 0, "quantization": 0, "balance": 0,
       "decorrelation": 0}

LITE0_40 = ["--image-encoder", "efficientnet-lite0", "--epochs", "40"]

#: name -> (what it tests, extra `crossmodal train` arguments)
ROWS: dict[str, tuple[str, list[str]]] = {
    "inter": ("inter-modal contrastive alone", ["--loss", json.dumps(OFF)]),
    "intra": ("+ intra-modal contrastive (image views, caption pairs)",
              ["--loss", json.dumps({**OFF, "intra_image": 0.2, "intra_text": 0.2})]),
    "with_intra": ("+ quantization, balance and decorrelation terms (intra-modal on)",
                   ["--loss", json.dumps({"intra_image": 0.2, "intra_text": 0.2})]),
    "default": ("**shipped default** (no tuning flags): inter-modal + quantization terms; intra-modal on "
                "only with labels", []),
    "triplet": ("default + hardest-negative triplet terms (inter, and intra where intra is on)",
                ["--loss", json.dumps({"triplet": 0.5, "intra_triplet": 0.1})]),
    "quant_low": ("default, quantization weight 0.1 (the previous default)",
                  ["--loss", json.dumps({"quantization": 0.1})]),
    "ste0": ("default, contrastive terms on relaxed codes only (no straight-through)",
             ["--loss", json.dumps({"ste_weight": 0.0})]),
    "ste1": ("default, contrastive terms on straight-through binary codes only",
             ["--loss", json.dumps({"ste_weight": 1.0})]),
    "head2": ("default, a 2-layer hash head (the previous default) instead of 3", ["--head-depth", "2"]),
    "five_captions": ("default, five captions of each image per step", ["--captions-per-step", "5"]),
    # quality II: one lever at a time on the previous default (EfficientNet-Lite0, 40 epochs), then the new default
    "lite0_40": ("previous default: EfficientNet-Lite0, 40 epochs", LITE0_40),
    "attention": ("previous default + learned attention pooling over the frozen CNN's 7x7 map (cached last-stage "
                  "inputs)", [*LITE0_40, "--image-pooling", "attention"]),
    "text_last1": ("previous default + the last MiniLM layer fine-tuned (on cached token states of the five below)",
                   [*LITE0_40, "--text-trainable", "last:1"]),
    "lite2": ("previous default with EfficientNet-Lite2 (260 px) instead of Lite0",
              ["--image-encoder", "efficientnet-lite2", "--epochs", "40"]),
    "concat40": ("previous default with Lite0+Lite2 features concatenated",
                 ["--image-encoder", "efficientnet-lite0+efficientnet-lite2", "--epochs", "40"]),
    "epochs80": ("previous default, 80 epochs", ["--image-encoder", "efficientnet-lite0"]),
    "head256": ("previous default, 256 head outputs (codes are prefixes; trained at 16/32/64/128/256)",
                [*LITE0_40, "--head-width", "256"]),
    "bits_short": ("previous default serving only --bits 16,32,64 (head width and trained lengths unchanged)",
                   [*LITE0_40, "--bits", "16,32,64"]),
    "concat2": ("Lite0+Lite2 concatenated, 80 epochs (the default until Lite1 joined)",
                ["--image-encoder", "efficientnet-lite0+efficientnet-lite2"]),
    "concat3": ("**default** (no tuning flags): Lite0+Lite1+Lite2 concatenated (three ImageNet CNNs), 80 epochs",
                ["--image-encoder", "efficientnet-lite0+efficientnet-lite1+efficientnet-lite2"]),
    "finetune": ("default, fine-tuned: the last CNN stage trains (on cached trunk activations)",
                 ["--image-trainable", "last:1"]),
    # fine-tuning costs ~2 min per fashion epoch on two cores: both sides of this pair get 12 epochs
    "frozen_e12": ("default, 12 epochs (frozen backbones)", ["--epochs", "12"]),
    "finetune_e12": ("default, 12 epochs, fine-tuned: the last CNN stage trains (on cached trunk activations)",
                     ["--epochs", "12", "--image-trainable", "last:1"]),
}

SETUPS = {
    "flickr8k": {"eval": [], "metrics": ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"],
                 "title": "Flickr8k ablation (dev)"},
    # dev items as queries against the training items (the test split stays unseen)
    "fashion": {"eval": ["--database", "train"], "metrics": ["i2t_mAP", "t2i_mAP", "i2t_mAP_tie_aware",
                                                             "t2i_mAP_tie_aware"],
                "title": "Fashion ablation (dev)"},
}


def run(cmd: list[str]) -> float:
    print("$", shlex.join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t


def metric(report: dict, direction: str, bits: int, key: str):
    return report["results"].get(direction, {}).get(str(bits), {}).get(key)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SETUPS))
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--work", default="runs/ablation")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    p.add_argument("--bits", default="16,32,64,128")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--title", default=None, help="BENCHMARKS.md section title (default: the dataset's ablation)")
    p.add_argument("--name", default=None, help="result name (default: ablation-DATASET)")
    args = p.parse_args()
    setup = SETUPS[args.dataset]
    work = Path(args.work)
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown row(s) {sorted(unknown)}; known: {', '.join(ROWS)}")
    bits = [int(b) for b in args.bits.split(",")]
    lines, measured = [], {}
    for name in rows:
        what, extra = ROWS[name]
        model = work / args.dataset / name
        train_cmd = ["crossmodal", "train", "--data", args.data, "--out", str(model), *extra]
        timing = model / "bench_train.json"
        if args.retrain or not (model / "train_summary.json").exists():
            before = cache_bytes()
            seconds = run([sys.executable, "-m", "crossmodal.cli", *train_cmd[1:]])
            timing.write_text(json.dumps({"seconds": seconds, "new_cache_bytes": cache_bytes() - before}))
        took = json.loads(timing.read_text()) if timing.exists() else {}
        log = [json.loads(x) for x in (model / "train_log.jsonl").read_text().splitlines()]
        summary = json.loads((model / "train_summary.json").read_text())
        report_dir = work / args.dataset / f"{name}-report"
        if args.retrain or not (report_dir / "report.json").exists():
            run([sys.executable, "-m", "crossmodal.cli", "eval", "--model", str(model), "--data", args.data,
                 "--split", "dev", "--bits", args.bits, "--no-baselines", *setup["eval"], "--out", str(report_dir)])
        report = json.loads((report_dir / "report.json").read_text())
        cells = []
        for b in bits:
            vals = []
            for m in setup["metrics"]:
                d, key = m.split("_", 1)
                v = metric(report, d, b, key)
                vals.append("–" if v is None else (f"{v:.3f}" if "mAP" in key else f"{v:.1f}"))
            cells.append(" / ".join(vals))
        measured[name] = {"what": what, "train_command": shlex.join(train_cmd), "best_epoch": summary["best_epoch"],
                          "epochs_seconds": log[-1]["time_s"], **({"train_command_seconds": took["seconds"],
                                                                     "new_cache_bytes": took["new_cache_bytes"]} if took else {}),
                          "dev": {str(b): {m: metric(report, m.split("_", 1)[0], b, m.split("_", 1)[1])
                                           for m in setup["metrics"]} for b in bits}}
        epochs_min = log[-1]["time_s"] / 60
        total = f"{took['seconds'] / 60:.1f}" if took else "–"
        new_cache = f"{took['new_cache_bytes'] / 2**20:.0f}" if took else "–"
        lines.append(f"| {what} | {' | '.join(cells)} | {summary['best_epoch']} | {epochs_min:.1f} | {total} | "
                     f"{new_cache} | `{shlex.join(train_cmd)}` |")
        print(lines[-1], flush=True)
    metric_names = " / ".join(m.replace("_", " ") for m in setup["metrics"])
    header = (f"| configuration | {' | '.join(f'{b} bits' for b in bits)} | best epoch | epochs (min) | "
              f"train command (min) | new feature cache (MiB) | train command |\n"
              f"|---|{'---|' * len(bits)}---|---|---|---|---|")
    body = (f"Each cell: {metric_names} (Hamming ranking of the **dev** split"
            f"{', queries vs train' if args.dataset == 'fashion' else ''}). Evaluation: "
            f"`crossmodal eval --model MODEL --data {args.data} --split dev --bits {args.bits} --no-baselines "
            f"{' '.join(setup['eval'])}`. *epochs*: the training loop alone; *train command*: the whole "
            f"`crossmodal train`, feature extraction included where the cache did not hold it yet; *new feature "
            f"cache*: what that command added to the feature cache (features another row already cached cost "
            f"nothing again).\n\n{header}\n" + "\n".join(lines))
    publish(args.name or f"ablation-{args.dataset}", args.title or setup["title"], "dev", measured, body,
            kind="ablation")


if __name__ == "__main__":
    main()
