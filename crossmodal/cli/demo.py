"""``crossmodal demo``: the main job end to end on the built-in shapes dataset, offline.

Generate the dataset -> train with the default encoders -> build the image and text
indexes -> evaluate both directions against the baselines -> print a table and example
queries -> write the report. It calls the same library pipelines as the subcommands
(``training.train_model``, ``retrieval.ingest``, ``retrieval.evaluation``), never the parser.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="where the dataset, model, indexes and report go")
    p.add_argument("--data", default=None, help="a prepared dataset to use instead of the built-in one")
    p.add_argument("--train-size", type=int, default=1500, help="scenes generated for training")
    p.add_argument("--test-size", type=int, default=500, help="scenes generated for evaluation")
    p.add_argument("--dev-size", type=int, default=300, help="scenes generated for validation")
    p.add_argument("--epochs", type=int, default=15,
                   help="training epochs at most (training stops once dev is perfect, or after 3 without gain)")
    p.add_argument("--batch-size", type=int, default=128, help="small batches: more steps on a small set")
    p.add_argument("--image-encoder", default="efficientnet-lite0",
                   help="the CNN: one small ImageNet CNN is plenty for coloured shapes (the bundled model for "
                        "photos joins three)")
    p.add_argument("--image-size", type=int, default=96, help="CNN input size (the scenes are 96x96)")
    p.add_argument("--bits", default="16,32,64", help="code lengths to train and evaluate")
    p.add_argument("--seed", type=int, default=0, help="random seed of data and training")
    p.add_argument("--fresh", action="store_true", help="regenerate and retrain even if artifacts exist")


EXAMPLES = """examples:
  crossmodal demo                      # the built-in dataset, offline, about 3 minutes on two cores
  crossmodal demo --epochs 5 --out runs/quick"""


def register(sub) -> None:
    from .common import add_command

    p = add_command(sub, "demo", "the whole job on the built-in dataset, offline (README's first command)", EXAMPLES)
    add_demo_args(p)
    p.set_defaults(func=run_demo)


def command_name() -> str:
    """How the user can run this command again: ``crossmodal`` when that is on the PATH,
    else the path that ran it (``.venv/bin/crossmodal`` before the venv is activated)."""
    import os
    import shutil
    import sys

    here = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    on_path = shutil.which("crossmodal")
    if on_path and (not here.endswith("crossmodal") or os.path.samefile(on_path, here)):
        return "crossmodal"
    return os.path.relpath(here) if here.endswith("crossmodal") else "crossmodal"


class Steps:
    """Each step's wall time, for the breakdown printed at the end and kept in the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._start = time.time()

    def start(self, name: str, msg: str) -> float:
        self.stop()
        print(f"\n== {msg}", flush=True)
        self._name, self._start = name, time.time()
        return self._start

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = round(time.time() - self._start, 1)
            self._name = None

    def breakdown(self) -> str:
        return ", ".join(f"{name} {sec:.0f}s" for name, sec in self.seconds.items())


def run_demo(args) -> dict:
    from crossmodal.config import ImageEncoderConfig, ModelConfig
    from crossmodal.data import build_dataset_dict, load_prepared, write_prepared
    from crossmodal.data.synthetic import synthetic_splits
    from crossmodal.model import CrossModalHasher
    from retrieval.evaluation import ValidationEvaluator, evaluate_prepared
    from retrieval.index import check_index_destination
    from retrieval.ingest import build_index, embed_prepared
    from retrieval.report import summary_table, write_report
    from retrieval.search import Searcher
    from training import TrainConfig, train_model

    from .common import print_screening

    start = time.time()
    steps = Steps()
    _step = steps.start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    data = Path(args.data) if args.data else out / "data"
    if args.data is None and (args.fresh or not (data / "dataset_dict.json").exists()):
        t = _step("data", f"1/5 generating the built-in dataset: {args.train_size} train / {args.dev_size} dev / "
                  f"{args.test_size} test scenes of coloured shapes, 5 captions each (seed {args.seed})")
        dd, report = build_dataset_dict(synthetic_splits(args.train_size, args.dev_size, args.test_size,
                                                         seed=args.seed))
        write_prepared(dd, report, data)
        print(f"   {report.summary().splitlines()[0]} ... ({time.time() - t:.0f}s)")
    else:
        _step("data", f"1/5 dataset: {data}")
    model_dir = out / "model"
    bits = tuple(int(b) for b in args.bits.split(","))
    if args.fresh or not (model_dir / "train_summary.json").exists():
        model_config = ModelConfig(image_encoder=ImageEncoderConfig(name=args.image_encoder,
                                                                    image_size=args.image_size), bits=bits)
        t = _step("train", f"2/5 training: {model_config.image_encoder.name} + {model_config.text_encoder.name} "
                           f"(frozen, features cached) with hash heads")
        # the demo's own recipe, whatever the Flickr8k defaults: one caption per step and random flips on
        # its small labelled set (what bench_demo.py measured)
        train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, patience=3,
                                   stop_at_score=1.0, cache_dir=str(cache), captions_per_step=1, flip_augment=True)
        run = train_model(data, model_dir, model_config, train_config, scorer=ValidationEvaluator(),
                          on_screened=print_screening,
                          card={"dataset": "rendered scenes of coloured shapes (crossmodal demo)", "synthetic": True})
        print(f"   best epoch {run.summary['best_epoch']}, validation score {run.summary['best_score']:.3f} "
              f"({time.time() - t:.0f}s)")
    else:
        _step("train", f"2/5 model: {model_dir} (already trained; --fresh retrains)")
    model = CrossModalHasher.from_pretrained(model_dir)
    t = _step("index", f"3/5 indexing the test split: image and text indexes, {max(bits)}-bit flat")
    index_dir = out / "index"
    check_index_destination(index_dir)
    test_items, _ = embed_prepared(model, data, ["test"], cache)
    counts = build_index(model, model_dir, test_items, index_dir, max(bits)).counts
    print(f"   {counts.get('image', 0)} images, {counts.get('text', 0)} captions ({time.time() - t:.0f}s)")
    t = _step("evaluate", "4/5 evaluating both directions against the float ceiling, LSH, ITQ and CCA+ITQ")
    report_dir = out / "report"
    result = evaluate_prepared(model, data, "test", bits=bits, cache_dir=cache)
    report = result.report
    write_report(report, report_dir, result.examples, result.load_image, title=f"crossmodal evaluation of {model_dir}")
    print(summary_table(report))
    print(f"   ({time.time() - t:.0f}s)")
    _step("examples", "5/5 example queries")
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
    steps.stop()
    summary = {k: report["results"][d][str(max(bits))]["mAP"] for d in ("i2t", "t2i") for k in [f"{d}_mAP"]}
    (out / "demo_summary.json").write_text(json.dumps({**summary, "seconds": round(time.time() - start),
                                                       "steps_seconds": steps.seconds}, indent=2))
    (report_dir / "timing.json").write_text(json.dumps({"seconds": round(time.time() - start, 1),
                                                        "steps_seconds": steps.seconds}, indent=2))
    print(f"\nDone in {(time.time() - start) / 60:.1f} min ({steps.breakdown()}). {max(bits)}-bit mAP: "
          f"image→text {summary['i2t_mAP']:.3f}, text→image {summary['t2i_mAP']:.3f}.")
    print(f"Report: {report_dir / 'summary.md'}")
    cmd = command_name()
    print(f"Search from the command line:  {cmd} search --index {index_dir} --text \"a red circle\"")
    print(f"Serve it over HTTP:            {cmd} serve --index {index_dir}  (then open http://127.0.0.1:8000)")
    print(f"Your own photos (the bundled model, trained on Flickr8k photos; this one knows only shapes):\n"
          f"                               {cmd} index build --images ~/Pictures --out idx/photos")
    return summary
