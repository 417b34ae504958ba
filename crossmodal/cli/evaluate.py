"""``crossmodal eval``: metrics, baselines, plots and a summary of a model on a prepared dataset."""
from __future__ import annotations

from .common import add_command, bits_list, cache_dir, cache_dir_arg, count, model_arg, print_screening

EXAMPLES = """examples:
  crossmodal eval --model models/f8k --data data/flickr8k --split test --out reports/f8k
  crossmodal eval --model models/fashion --data data/fashion --database train,dev --within --out reports/fashion"""


def run(args) -> dict:
    from crossmodal.model import CrossModalHasher
    from retrieval.evaluation import evaluate_prepared
    from retrieval.report import summary_table, write_report

    model = CrossModalHasher.from_pretrained(args.model)
    result = evaluate_prepared(model, args.data, args.split, [s for s in (args.database or "").split(",") if s],
                               args.bits, args.relevance, args.within, args.baselines, cache_dir(args),
                               image_views="flip" if args.flip_tta else args.image_views, rerank=args.rerank,
                               rerank_dtype=args.rerank_dtype)
    print_screening(result.screening)
    result.report["model"]["path"] = str(args.model)
    add_validation_score(result.report, args.model, args.split)
    write_report(result.report, args.out, result.examples, result.load_image,
                 title=f"crossmodal evaluation of {args.model}")
    print(summary_table(result.report))
    print(f"report written to {args.out} (report.json, summary.md, plots)")
    return result.report


def add_validation_score(report: dict, model, split: str) -> None:
    """When this evaluation is the model's own validation (its validation split, its
    validation code length), ``validation_score`` is the score that picked its best epoch,
    recomputed from the saved model; beside it, the trainer's ``best_score`` (float32 heads,
    at the chosen epoch) and ``saved_score`` (the heads as stored: equal to this score)."""
    import json

    from crossmodal.pretrained import resolve_model_dir

    summary_file = resolve_model_dir(model) / "train_summary.json"
    if not summary_file.is_file():
        return
    summary = json.loads(summary_file.read_text())
    train = summary.get("train_config", {})
    bits = str(train.get("val_bits"))
    if train.get("val_split") == split and bits in report.get("score", {}):
        report["validation_score"] = {"bits": int(bits), "split": split, "score": report["score"][bits],
                                      "trainer_best_score": summary.get("best_score"),
                                      "trainer_saved_score": summary.get("saved_score"),
                                      "best_epoch": summary.get("best_epoch")}


def register(sub) -> None:
    from crossmodal.config import IMAGE_VIEWS
    from retrieval.rerank import RERANK_DTYPES

    p = add_command(sub, "eval", "evaluate a model: metrics, baselines, plots, summary", EXAMPLES)
    model_arg(p)
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test", help="query split")
    p.add_argument("--database", default=None,
                   help="database split(s), comma-separated (default: the query split's other modality)")
    p.add_argument("--bits", type=bits_list, default=None, help="code lengths (default: the model's, up to 64)")
    p.add_argument("--relevance", default="auto", choices=["auto", "pairs", "labels"],
                   help="what counts as relevant: the paired item, a shared label, or labels when the data has them")
    p.add_argument("--within", action="store_true", help="also image->image and text->text")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="skip the float, LSH, ITQ and CCA+ITQ baselines")
    cache_dir_arg(p)
    p.add_argument("--image-views", default=None, choices=list(IMAGE_VIEWS),
                   help="score each image as the mean of these views' outputs, whatever the model's own setting: "
                        "plain, flip (with its mirror image: free with cached features) or crops (five zoomed "
                        "crops: five CNN passes, cached); default: the model's (train --image-views)")
    p.add_argument("--flip-tta", action="store_true", help="the same as --image-views flip")
    p.add_argument("--rerank", type=count(0), default=None,
                   help="also measure what search serves: the Hamming top N re-ranked by the stored outputs "
                        "(report.json 'served'); default: the N a new index uses at each length; 0: off")
    p.add_argument("--rerank-dtype", default="int8", choices=list(RERANK_DTYPES),
                   help="how the re-rank store keeps the outputs")
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=run)
