"""Train with the default configuration on a real dataset and evaluate it against the
baselines; write the table (and the time it took) to BENCHMARKS.md.

    python benchmarks/bench_quality.py flickr8k --source ../shared/data/flickr8k --work runs/bench
    python benchmarks/bench_quality.py fashion --source ../shared/data/fashion --work runs/bench

Flickr8k: 1,000 test images and their 5,000 captions, Recall@K both directions.
Fashion: the 2,000 test items as queries against the other 7,583 (train + dev),
relevance = same articleType, mAP@all and tie-aware mAP both directions.
Extra arguments after ``--`` go to ``crossmodal train``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cache_bytes, command_line, write_section  # noqa: E402

SETUPS = {
    "flickr8k": {"prepare": "prepare_flickr8k.py", "eval": [], "title": "Flickr8k (1,000 test images, 5,000 captions)"},
    "fashion": {"prepare": "prepare_fashion.py", "eval": ["--database", "train,dev"],
                "title": "Fashion catalogue (2,000 test queries vs 7,583 train+dev items, relevance = articleType)"},
}


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SETUPS))
    p.add_argument("--source", required=True)
    p.add_argument("--work", default="runs/bench")
    p.add_argument("--bits", default="16,32,64")
    p.add_argument("--name", default=None, help="section name suffix (for ablations)")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate the model already trained in WORK/models/DATASET-NAME instead of training again")
    p.add_argument("--flip-tta", action="store_true",
                   help="evaluate with flip test-time augmentation (the section is named NAME+flip-tta)")
    p.add_argument("--image-views", default=None, choices=["flip", "crops"],
                   help="evaluate with these test-time views (the section is named NAME+VIEWS)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # argparse would bind an empty list before options
    args = p.parse_args(argv[:cut])
    args.train_args = argv[cut + 1:]
    setup = SETUPS[args.dataset]
    work = Path(args.work)
    data = work / "data" / args.dataset
    if not (data / "dataset_dict.json").exists():
        run([sys.executable, str(ROOT / "data_scripts" / setup["prepare"]), "--source", args.source, "--out", str(data)])
    tag = args.name or "default"
    model = work / "models" / f"{args.dataset}-{tag}"
    if args.reuse and (model / "train_summary.json").exists():
        log = [json.loads(x) for x in (model / "train_log.jsonl").read_text().splitlines()]
        t_train = log[-1]["time_s"]  # the epochs only: feature extraction is not in the log
        print(f"reusing {model} (trained in {t_train / 60:.1f} min of epochs)")
    else:
        before = cache_bytes()
        t_train = run([sys.executable, "-m", "crossmodal.cli", "train", "--data", str(data), "--out", str(model),
                       *args.train_args])
        (model / "bench_train.json").write_text(json.dumps({"seconds": t_train,
                                                            "new_cache_bytes": cache_bytes() - before}))
    took = json.loads((model / "bench_train.json").read_text()) if (model / "bench_train.json").exists() else {}
    if args.flip_tta:
        args.image_views = "flip"
    section = {None: tag, "flip": f"{tag}+flip-tta"}.get(args.image_views, f"{tag}+{args.image_views}")
    report_dir = work / "reports" / f"{args.dataset}-{section}"
    t_eval = run([sys.executable, "-m", "crossmodal.cli", "eval", "--model", str(model), "--data", str(data),
                  "--split", "test", "--bits", args.bits, *setup["eval"], "--out", str(report_dir),
                  *(["--image-views", args.image_views] if args.image_views else [])])
    from retrieval.report import summary_table
    report = json.loads((report_dir / "report.json").read_text())
    summary = json.loads((model / "train_summary.json").read_text())
    body = [f"Command: `{command_line()}`", "",
            f"Training ({'epochs only, model reused' if args.reuse else 'features included, cache cold or warm as found'}): "
            f"{t_train / 60:.1f} min, best epoch "
            f"{summary['best_epoch']}; evaluation: {t_eval / 60:.1f} min." +
            (f" Feature cache added by training: {took['new_cache_bytes'] / 2**20:.0f} MiB." if took else ""),
            f"Model: `crossmodal train --data {data} --out {model} {' '.join(args.train_args)}`".rstrip() + ".", "",
            summary_table(report)]
    write_section(f"{setup['title']}: {section}", "\n".join(body))


if __name__ == "__main__":
    main()
