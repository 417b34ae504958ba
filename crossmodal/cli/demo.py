"""``crossmodal demo``: the main job end to end on the built-in shapes dataset, offline.

Generate the dataset -> train with the default encoders -> build the image and text
indexes -> evaluate both directions against the baselines -> print a table and example
queries -> write the report. Like the rest of ``crossmodal.cli`` this is an application module: it is where
the model library, ``training`` and ``retrieval`` meet.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="where the dataset, model, indexes and report go")
    p.add_argument("--data", default=None, help="a prepared dataset to use instead of the built-in one")
    p.add_argument("--train-size", type=int, default=3000, help="scenes generated for training")
    p.add_argument("--test-size", type=int, default=1000, help="scenes generated for evaluation")
    p.add_argument("--dev-size", type=int, default=500, help="scenes generated for validation")
    p.add_argument("--epochs", type=int, default=25, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="small batches: more steps on a small set")
    p.add_argument("--image-size", type=int, default=128, help="CNN input size (the scenes are 96x96)")
    p.add_argument("--bits", default="16,32,64", help="code lengths to train and evaluate")
    p.add_argument("--seed", type=int, default=0, help="random seed of data and training")
    p.add_argument("--fresh", action="store_true", help="regenerate and retrain even if artifacts exist")


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.time()


def run_demo(args) -> dict:
    from crossmodal.cli import build_parser, run_eval, run_index, run_train
    from crossmodal.data import build_dataset_dict, load_prepared, write_prepared
    from crossmodal.data.synthetic import synthetic_splits
    from retrieval.search import Searcher

    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "cache")
    data = Path(args.data) if args.data else out / "data"
    if args.data is None and (args.fresh or not (data / "dataset_dict.json").exists()):
        t = _step(f"1/5 generating the built-in dataset: {args.train_size} train / {args.dev_size} dev / "
                  f"{args.test_size} test scenes of coloured shapes, 5 captions each (seed {args.seed})")
        dd, report = build_dataset_dict(synthetic_splits(args.train_size, args.dev_size, args.test_size,
                                                         seed=args.seed))
        write_prepared(dd, report, data)
        print(f"   {report.summary().splitlines()[0]} ... ({time.time() - t:.0f}s)")
    else:
        _step(f"1/5 dataset: {data}")
    model_dir = out / "model"
    parser = build_parser()
    if args.fresh or not (model_dir / "train_summary.json").exists():
        t = _step("2/5 training: EfficientNet-Lite0 + MiniLM (frozen, features cached) with hash heads")
        run_train(parser.parse_args(["train", "--data", str(data), "--out", str(model_dir), "--epochs",
                                     str(args.epochs), "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--bits", args.bits,
                                     "--cache-dir", cache, "--seed", str(args.seed), "--patience", "8"]))
        print(f"   ({time.time() - t:.0f}s)")
    else:
        _step(f"2/5 model: {model_dir} (already trained; --fresh retrains)")
    bits = [int(b) for b in args.bits.split(",")]
    t = _step(f"3/5 indexing the test split: image and text indexes, {max(bits)}-bit flat")
    index_dir = out / "index"
    run_index(parser.parse_args(["index", "build", "--model", str(model_dir), "--data", str(data), "--split", "test",
                                 "--bits", str(max(bits)), "--store-floats", "--cache-dir", cache,
                                 "--out", str(index_dir)]))
    t = _step("4/5 evaluating both directions against the float ceiling, LSH, ITQ and CCA+ITQ")
    report_dir = out / "report"
    report = run_eval(parser.parse_args(["eval", "--model", str(model_dir), "--data", str(data), "--split", "test",
                                         "--bits", args.bits, "--cache-dir", cache, "--out", str(report_dir)]))
    print(f"   ({time.time() - t:.0f}s)")
    _step("5/5 example queries")
    searcher = Searcher.open(index_dir)
    test = load_prepared(data)["test"]
    for caption in [test[0]["captions"][0], test[1]["captions"][2]]:
        hits = searcher.search_texts([caption], "image", k=5)[0]
        print(f'   text → images: "{caption}"')
        for h in hits:
            print(f"      d={h.distance:>2}  {h.key}  labels={h.labels}")
    for row in (test[2], test[3]):
        hits = searcher.search_images([row["image"]], "text", k=3)[0]
        print(f"   image → captions: {row['id']} (labels {row['labels']})")
        for h in hits:
            print(f"      d={h.distance:>2}  {h.source}")
    summary = {k: report["results"][d][str(max(bits))]["mAP"] for d in ("i2t", "t2i") for k in [f"{d}_mAP"]}
    (out / "demo_summary.json").write_text(json.dumps({**summary, "seconds": round(time.time() - start)}, indent=2))
    print(f"\nDone in {(time.time() - start) / 60:.1f} min. {max(bits)}-bit mAP: image→text {summary['i2t_mAP']:.3f}, "
          f"text→image {summary['t2i_mAP']:.3f}.")
    print(f"Report: {report_dir / 'summary.md'}")
    print(f"Search from the command line:  crossmodal search --index {index_dir} --text \"a red circle\"")
    print(f"Serve it over HTTP:            crossmodal serve --index {index_dir}  (then open http://127.0.0.1:8000)")
    return summary
