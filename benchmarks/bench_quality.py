"""Train with the default configuration on a real dataset (or take a trained model) and
evaluate it on the **test** split against the float ceiling and the baselines (fitted on
train, CCA's ridge chosen on dev); writes one result file (``split: test``).

    python benchmarks/bench_quality.py flickr8k --source ../shared/data/flickr8k --work runs/bench
    python benchmarks/bench_quality.py flickr8k --source ../shared/data/flickr8k --model default
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
from common import ROOT, cache_bytes, publish  # noqa: E402

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
    p.add_argument("--model", default=None,
                   help="evaluate this trained model (a folder, or 'default': the bundled one) instead of training")
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
    tag = args.name or ("bundled" if args.model == "default" else "default")
    model = Path(args.model) if args.model and args.model != "default" else work / "models" / f"{args.dataset}-{tag}"
    if args.model == "default":
        from crossmodal.pretrained import DEFAULT_DIR
        model, t_train = DEFAULT_DIR, None
    elif args.model:
        t_train = None
    elif args.reuse and (model / "train_summary.json").exists():
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
    config = json.loads((model / "config.json").read_text())
    summary = json.loads((model / "train_summary.json").read_text()) if (model / "train_summary.json").exists() else {}
    body = []
    if t_train is not None:
        body.append(f"Training ({'epochs only, model reused' if args.reuse else 'features included, cache cold or warm as found'}): "
                    f"{t_train / 60:.1f} min, best epoch {summary.get('best_epoch')}; evaluation: {t_eval / 60:.1f} min." +
                    (f" Feature cache added by training: {took['new_cache_bytes'] / 2**20:.0f} MiB." if took else ""))
        body.append(f"Model: `crossmodal train --data {data} --out {model} {' '.join(args.train_args)}`".rstrip() + ".")
    else:
        body.append(f"Model: `{args.model}` ({config.get('fingerprint')}); evaluation: {t_eval / 60:.1f} min.")
    fitted = report["protocol"].get("baselines_fitted_on")
    ridge = report["protocol"].get("cca_itq_ridge")
    body += ["", f"Baselines fitted on {fitted}; CCA+ITQ's ridge {ridge['chosen']:g} chosen on {ridge['on']}." if ridge
             else f"Baselines fitted on {fitted}.", "", summary_table(report)]
    metrics = {k: report[k] for k in ("results", "served", "baselines", "protocol", "score") if k in report}
    for direction in metrics["results"].values():  # the radius curves are in the report, not the result
        for by_bits in direction.values():
            by_bits.pop("radius_curve", None)
    publish(f"quality-{args.dataset}-{section}", f"{setup['title']}: {section}", "test", metrics, "\n".join(body),
            model={"path": str(model) if args.model != "default" else "default", "config": config,
                   "best_epoch": summary.get("best_epoch")})


if __name__ == "__main__":
    main()
