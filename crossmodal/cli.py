"""The ``crossmodal`` command: one subcommand per user task.

This is the one place where the model library, ``training`` and ``retrieval`` meet.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np


def _bits(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {s!r}") from None


# ---- train ---------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    from training import TrainConfig
    from training.losses import LossConfig

    d, dl = TrainConfig(), LossConfig()
    p.add_argument("--data", required=True, help="prepared dataset folder (data_scripts/prepare_*.py)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--image-encoder", default="efficientnet-lite0")
    p.add_argument("--image-weights", default="default", help="'default', 'none' or a local weights file")
    p.add_argument("--image-trainable", default="frozen", help="frozen | full | last:N")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--text-encoder", default="minilm", help="minilm | gru | a transformers name or folder")
    p.add_argument("--text-trainable", default="frozen", help="frozen | full | last:N")
    p.add_argument("--text-vocab-size", type=int, default=None, help="GRU vocabulary size")
    p.add_argument("--text-hidden", type=int, default=None, help="GRU hidden size (embedding size too)")
    p.add_argument("--bits", type=_bits, default=(16, 32, 64, 128))
    p.add_argument("--quantizer", default="sign", choices=["sign", "itq", "kmeans"])
    p.add_argument("--head-depth", type=int, default=None)
    p.add_argument("--head-hidden", type=int, default=None)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--supervision", default=d.supervision, choices=["auto", "pairs", "labels"])
    p.add_argument("--val-split", default=d.val_split)
    p.add_argument("--cache-dir", default=None, help="feature cache (default ~/.cache/crossmodal/features)")
    p.add_argument("--loss", default=None,
                   help=f"JSON of loss weights to override, e.g. '{{\"triplet\": 0.5}}'; fields: "
                        f"{', '.join(asdict(dl))}")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")


def run_train(args) -> dict:
    from crossmodal.config import HeadConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig
    from crossmodal.data import load_prepared
    from crossmodal.model import CrossModalHasher
    from retrieval.evaluation import validation_scorer
    from training import TrainConfig, Trainer, init_distributed_from_env
    from training.losses import LossConfig

    init_distributed_from_env()
    head = HeadConfig()
    if args.head_depth is not None:
        head.depth = args.head_depth
    if args.head_hidden is not None:
        head.hidden_dim = args.head_hidden
    text_cfg = TextEncoderConfig(name=args.text_encoder, trainable=args.text_trainable)
    if args.text_vocab_size:
        text_cfg.vocab_size = args.text_vocab_size
    if args.text_hidden:
        text_cfg.hidden_dim = text_cfg.embed_dim = args.text_hidden
    config = ModelConfig(
        image_encoder=ImageEncoderConfig(name=args.image_encoder, weights=args.image_weights,
                                         trainable=args.image_trainable, image_size=args.image_size),
        text_encoder=text_cfg,
        head=head, bits=args.bits, quantizer=args.quantizer)
    loss = asdict(LossConfig())
    if args.loss:
        override = json.loads(args.loss)
        unknown = set(override) - set(loss)
        if unknown:
            raise SystemExit(f"--loss: unknown field(s) {sorted(unknown)}; known: {sorted(loss)}")
        loss.update(override)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                       seed=args.seed, supervision=args.supervision, val_split=args.val_split,
                       cache_dir=args.cache_dir, checkpoint_every=args.checkpoint_every,
                       loss=LossConfig(**loss))
    data = load_prepared(args.data, splits=[tcfg.train_split])
    import torch
    torch.manual_seed(args.seed)
    model = CrossModalHasher(config)
    trainer = Trainer(model, data, args.out, tcfg, scorer=validation_scorer)
    summary = trainer.fit(resume=args.resume)
    if trainer.rank == 0:
        print(f"model written to {args.out} (best epoch {summary['best_epoch']}, "
              f"validation score {summary['best_score']:.3f})")
    return summary


# ---- encode --------------------------------------------------------------------------
ENCODE_LAYOUT = """NPZ layout written by `crossmodal encode`:
  bits              int array: the code lengths present
  image_ids         str [N]: item ids
  text_ids          str [M]: caption ids, '<item id>#<n>'
  text_item_ids     str [M]: the item each caption describes
  texts             str [M]: the captions
  image_codes_<K>   uint8 [N, K/8]: packed codes (numpy packbits, big-endian)
  text_codes_<K>    uint8 [M, K/8]
  model_fingerprint str: the model that made them"""


def run_encode(args) -> Path:
    from datasets import Image as HFImage

    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.model import CrossModalHasher
    from training.features import decode_image

    model = CrossModalHasher.from_pretrained(args.model)
    bits = args.bits or model.config.bits
    ds = load_prepared(args.data, splits=[args.split])[args.split]
    flat = flatten_split(ds)
    rows = ds.cast_column("image", HFImage(decode=False))["image"]
    img = model.embed_images(decode_image(v) for v in rows)
    txt = model.embed_texts(flat.captions)
    counters: dict[int, int] = {}
    text_ids = []
    for i in flat.caption_item:
        n = counters.get(int(i), 0)
        counters[int(i)] = n + 1
        text_ids.append(f"{flat.ids[i]}#{n}")
    arrays = {"bits": np.array(bits), "image_ids": np.array(flat.ids), "text_ids": np.array(text_ids),
              "text_item_ids": np.array([flat.ids[i] for i in flat.caption_item]),
              "texts": np.array(flat.captions), "model_fingerprint": np.array(model.fingerprint())}
    for k in bits:
        arrays[f"image_codes_{k}"] = model.quantize(img, k)
        arrays[f"text_codes_{k}"] = model.quantize(txt, k)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    print(f"wrote {out}: {len(flat.ids)} images, {len(flat.captions)} captions, bits {list(bits)}")
    return out


# ---- eval ----------------------------------------------------------------------------
def split_outputs(model, ds, flat, cache_dir, vocab):
    """Relaxed outputs and raw backbone features of one split, as two ``Side``s.

    A frozen encoder's features come from the feature cache (shared with training);
    a fine-tuned encoder is run directly (its weights are not in the cache key)."""
    import torch
    from dataclasses import asdict as _asdict

    from retrieval.protocol import Side
    from training import features as fc

    img_cache = cache_dir if getattr(model.image_encoder, "is_frozen", False) else None
    txt_cache = cache_dir if getattr(model.text_encoder, "is_frozen", False) else None
    img_raw = fc.image_features(model.image_encoder, _asdict(model.config.image_encoder), ds, img_cache)[:, 0]
    txt_raw = fc.text_features(model.text_encoder, _asdict(model.config.text_encoder), ds, flat.captions, txt_cache)
    model.eval()
    with torch.inference_mode():
        img = torch.cat([model.image_relaxed_from_features(img_raw[s:s + 2048])
                         for s in range(0, len(img_raw), 2048)]).numpy()
        txt = torch.cat([model.text_relaxed_from_features(txt_raw[s:s + 4096])
                         for s in range(0, len(txt_raw), 4096)]).numpy()
    labels = flat.label_matrix(vocab) if vocab else None
    images = Side(img, list(flat.ids), labels, img_raw.numpy())
    texts = Side(txt, [flat.ids[i] for i in flat.caption_item], labels[flat.caption_item] if labels is not None
                 else None, txt_raw.numpy(), texts=list(flat.captions))
    return images, texts


def _concat_sides(sides):
    from retrieval.protocol import Side

    cat = lambda xs: None if any(x is None for x in xs) else np.concatenate(xs)  # noqa: E731
    return Side(np.concatenate([s.relaxed for s in sides]), [i for s in sides for i in s.item_ids],
                cat([s.labels for s in sides]), cat([s.raw for s in sides]),
                None if any(s.texts is None for s in sides) else [t for s in sides for t in s.texts])


def run_eval(args) -> dict:
    from datasets import Image as HFImage

    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split, label_vocab
    from crossmodal.model import CrossModalHasher
    from retrieval.protocol import EvalConfig, ItemSet, evaluate
    from retrieval.report import summary_table, write_report
    from training.features import decode_image, default_cache_dir

    model = CrossModalHasher.from_pretrained(args.model)
    bits = args.bits or tuple(b for b in model.config.bits if b <= 64) or model.config.bits
    db_splits = [s for s in (args.database or "").split(",") if s]
    ds = load_prepared(args.data, splits=[args.split, *db_splits])
    if args.split in db_splits:
        raise ValueError(f"--database must not include the query split {args.split!r}")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    flats = {s: flatten_split(ds[s]) for s in [args.split, *db_splits]}
    use_labels = args.relevance == "labels" or (args.relevance == "auto" and flats[args.split].has_labels)
    vocab = label_vocab(*flats.values()) if use_labels else []
    outputs = {s: split_outputs(model, ds[s], flats[s], cache, vocab) for s in flats}
    query = ItemSet(*outputs[args.split], splits=[args.split])
    database = None
    if db_splits:
        database = ItemSet(_concat_sides([outputs[s][0] for s in db_splits]),
                           _concat_sides([outputs[s][1] for s in db_splits]), splits=db_splits)
    train_raw = None
    if args.baselines and "train" in ds:
        tflat = flats.get("train") or flatten_split(ds["train"])
        timg, ttxt = outputs["train"] if "train" in outputs else split_outputs(model, ds["train"], tflat, cache, [])
        train_raw = (timg.raw[tflat.caption_item], ttxt.raw)
    cfg = EvalConfig(bits=tuple(bits), relevance="labels" if use_labels else "pairs", within=args.within,
                     baselines=args.baselines)
    report = evaluate(model.quantize, query, database, cfg, train_raw)
    report["model"] = {"path": str(args.model), "fingerprint": model.fingerprint(), "quantizer": model.config.quantizer}
    report["data"] = str(args.data)

    # example queries at the longest evaluated length
    from crossmodal.codes import hamming_distances
    k = max(bits)
    db = database or query
    img_codes_q, txt_codes_q = model.quantize(query.images.relaxed, k), model.quantize(query.texts.relaxed, k)
    img_codes_d, txt_codes_d = model.quantize(db.images.relaxed, k), model.quantize(db.texts.relaxed, k)
    examples = []
    rng = np.random.default_rng(0)
    for qi in rng.choice(len(query.texts), size=min(3, len(query.texts)), replace=False):
        d = hamming_distances(txt_codes_q[qi:qi + 1], img_codes_d)[0]
        top = np.argsort(d, kind="stable")[:5]
        examples.append({"direction": "t2i", "query": query.texts.texts[qi], "results": [
            {"id": db.images.item_ids[j], "distance": int(d[j]),
             "relevant": _is_relevant(query.texts, qi, db.images, j, use_labels)} for j in top]})
    for qi in rng.choice(len(query.images), size=min(3, len(query.images)), replace=False):
        d = hamming_distances(img_codes_q[qi:qi + 1], txt_codes_d)[0]
        top = np.argsort(d, kind="stable")[:5]
        examples.append({"direction": "i2t", "query": query.images.item_ids[qi], "results": [
            {"id": db.texts.item_ids[j], "distance": int(d[j]), "text": db.texts.texts[j],
             "relevant": _is_relevant(query.images, qi, db.texts, j, use_labels)} for j in top]})
    index = {}
    for s in flats:
        for i, item in enumerate(flats[s].ids):
            index[item] = (s, i)
    raw_images = {s: ds[s].cast_column("image", HFImage(decode=False)) for s in flats}
    loader = lambda item: decode_image(raw_images[index[item][0]][index[item][1]]["image"])  # noqa: E731
    write_report(report, args.out, examples, loader, title=f"crossmodal evaluation of {args.model}")
    print(summary_table(report))
    print(f"report written to {args.out} (report.json, summary.md, plots)")
    return report


def _is_relevant(q_side, qi, d_side, dj, use_labels) -> bool:
    if use_labels:
        return bool((q_side.labels[qi] & d_side.labels[dj]).any())
    return q_side.item_ids[qi] == d_side.item_ids[dj]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model on a prepared dataset")
    add_train_args(p)
    p.set_defaults(func=run_train)
    p = sub.add_parser("encode", help="write packed codes of a split to an .npz",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENCODE_LAYOUT)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--bits", type=_bits, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_encode)
    p = sub.add_parser("eval", help="evaluate a model: metrics, baselines, plots, summary")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", help="query split")
    p.add_argument("--database", default=None,
                   help="database split(s), comma-separated (default: the query split's other modality)")
    p.add_argument("--bits", type=_bits, default=None, help="code lengths (default: the model's, up to 64)")
    p.add_argument("--relevance", default="auto", choices=["auto", "pairs", "labels"])
    p.add_argument("--within", action="store_true", help="also image->image and text->text")
    p.add_argument("--no-baselines", dest="baselines", action="store_false")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=run_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        print(f"crossmodal {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
