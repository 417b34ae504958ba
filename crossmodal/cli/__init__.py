"""The ``crossmodal`` command: one subcommand per user task.

This package (``crossmodal/cli/``) is the application on top: the one place where the
model library, ``training`` and ``retrieval`` meet. The rest of ``crossmodal`` imports
neither of them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np


def _count(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a clear one-line error otherwise)."""
    def parse(s: str) -> int:
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _bits(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {s!r}") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; every option shows its default (unless None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text
                and action.option_strings and not isinstance(action.default, bool)):
            text += " (default: %(default)s)"
        return text


def _choices_help(notes: dict[str, str]) -> str:
    return "; ".join(f"{n}: {d}" for n, d in notes.items())


def _bits_str(bits) -> str:
    return ",".join(map(str, bits))


# ---- train ---------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    from crossmodal.config import HeadConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig
    from crossmodal.encoders import describe_encoders
    from crossmodal.quantizers import QUANTIZERS
    from training import TrainConfig
    from training.losses import LossConfig

    d, dl, m = TrainConfig(), LossConfig(), ModelConfig()
    img, txt, head = ImageEncoderConfig(), TextEncoderConfig(), HeadConfig()
    p.add_argument("--data", required=True, help="prepared dataset folder (data_scripts/prepare_*.py)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--image-encoder", default=img.name, metavar="NAME",
                   choices=list(describe_encoders("image")),
                   help="image CNN: " + _choices_help(describe_encoders("image")))
    p.add_argument("--image-weights", default=img.weights, help="'default', 'none' or a local weights file")
    p.add_argument("--image-trainable", default=img.trainable, help="frozen | full | last:N (the last N stages)")
    p.add_argument("--image-size", type=int, default=None, help="CNN input size (default: the encoder's own)")
    p.add_argument("--text-encoder", default=txt.name, metavar="NAME",
                   help="text encoder: " + _choices_help(describe_encoders("text")))
    p.add_argument("--text-trainable", default=txt.trainable, help="frozen | full | last:N (the last N layers)")
    p.add_argument("--text-vocab-size", type=int, default=None, help=f"GRU vocabulary size (default: {txt.vocab_size})")
    p.add_argument("--text-hidden", type=int, default=None,
                   help=f"GRU hidden and embedding size (default: {txt.hidden_dim} and {txt.embed_dim})")
    p.add_argument("--bits", type=_bits, default=m.bits, help="code lengths to train, comma-separated multiples of 8")
    p.add_argument("--quantizer", default=m.quantizer, choices=sorted(QUANTIZERS),
                   help="how outputs become bits: sign of each output, ITQ rotation, or k-means per bit")
    p.add_argument("--head-depth", type=int, default=head.depth, help="layers of each hash head's MLP")
    p.add_argument("--head-hidden", type=int, default=head.hidden_dim, help="width of the hash heads' hidden layers")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training split (at most)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate of the heads")
    p.add_argument("--captions-per-step", type=int, default=d.captions_per_step,
                   help="captions of each image in every step (several positives per image row)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better validation score")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same model)")
    p.add_argument("--supervision", default=d.supervision, choices=["auto", "pairs", "labels"],
                   help="positives: image-caption pairs, shared labels, or labels when the data has them")
    p.add_argument("--val-split", default=d.val_split, help="split scored after each epoch to pick the best")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/crossmodal/features)")
    p.add_argument("--loss", default=None,
                   help=f"JSON of loss weights to override, e.g. '{{\"triplet\": 0.5}}'; fields: "
                        f"{', '.join(asdict(dl))}")
    p.add_argument("--device", default=d.device, help="auto (CUDA when available) | cpu | cuda | cuda:N")
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
                       captions_per_step=args.captions_per_step,
                       seed=args.seed, supervision=args.supervision, val_split=args.val_split,
                       cache_dir=args.cache_dir, checkpoint_every=args.checkpoint_every, device=args.device,
                       loss=LossConfig(**loss))
    data = load_prepared(args.data, splits=[tcfg.train_split])
    from crossmodal.cache import default_cache_dir
    from crossmodal.data.screen import screen_prepared
    screening = screen_prepared(data, [s for s in (tcfg.train_split, tcfg.val_split) if s and s in data],
                                Path(tcfg.cache_dir) if tcfg.cache_dir else default_cache_dir())
    _print_screening(screening)
    import torch
    torch.manual_seed(args.seed)
    model = CrossModalHasher(config)
    trainer = Trainer(model, data, args.out, tcfg, scorer=validation_scorer)
    summary = trainer.fit(resume=args.resume)
    summary["skipped"] = {split: r.counts() for split, r in screening.items()}
    if trainer.rank == 0:
        _record_training_data(Path(args.out), args.data, summary["skipped"])
    if trainer.rank == 0:
        print(f"model written to {args.out} (best epoch {summary['best_epoch']}, "
              f"validation score {summary['best_score']:.3f})")
        _print_screening(screening)
    return summary


def _record_training_data(out: Path, data: str, skipped: dict) -> None:
    """Add what `crossmodal info` shows to train_summary.json: the data and when training ended."""
    import datetime as dt

    from crossmodal.atomic import atomic_write_text

    path = out / "train_summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(data=str(Path(data).resolve()), skipped=skipped,
                   finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(path, json.dumps(summary, indent=2))


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

    from crossmodal.cache import default_cache_dir
    from crossmodal.data.screen import screen_prepared

    model = CrossModalHasher.from_pretrained(args.model)
    bits = args.bits or model.config.bits
    dd = load_prepared(args.data, splits=[args.split])
    _print_screening(screen_prepared(dd, [args.split], default_cache_dir()))
    ds = dd[args.split]
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

    A frozen encoder's features come from the feature cache (shared with training), and
    so do the frozen trunk activations under a fine-tuned tail (``last:N``); any other
    fine-tuned encoder is run directly (its weights are not in the cache key)."""
    import torch
    from dataclasses import asdict as _asdict

    from retrieval.protocol import Side
    from training import features as fc

    img_cache = cache_dir if getattr(model.image_encoder, "is_frozen", False) else None
    txt_cache = cache_dir if getattr(model.text_encoder, "is_frozen", False) else None
    model.eval()
    n_tail = model.image_tail_stages
    if n_tail:  # fine-tuned tail on a frozen trunk: the trunk's activations are cached like features
        acts = fc.image_features(model.image_encoder, _asdict(model.config.image_encoder), ds, cache_dir,
                                 trunk_of=n_tail)[:, 0]
        with torch.inference_mode():
            img_raw = torch.cat([model.image_encoder.tail(acts[s:s + 256].float(), n_tail)
                                 for s in range(0, len(acts), 256)])
    else:
        img_raw = fc.image_features(model.image_encoder, _asdict(model.config.image_encoder), ds, img_cache)[:, 0]
    txt_raw = fc.text_features(model.text_encoder, _asdict(model.config.text_encoder), ds, flat.captions, txt_cache)
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
    from crossmodal.errors import InvalidInput
    from retrieval.report import summary_table, write_report
    from crossmodal.cache import default_cache_dir
    from training.features import decode_image

    model = CrossModalHasher.from_pretrained(args.model)
    bits = args.bits or tuple(b for b in model.config.bits if b <= 64) or model.config.bits
    db_splits = [s for s in (args.database or "").split(",") if s]
    ds = load_prepared(args.data, splits=[args.split, *db_splits])
    if args.split in db_splits:
        raise InvalidInput(f"--database must not include the query split {args.split!r}")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    from crossmodal.data.screen import screen_prepared
    screened = [args.split, *db_splits] + (["train"] if args.baselines and "train" in ds else [])
    _print_screening(screen_prepared(ds, list(dict.fromkeys(screened)), cache))
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


# ---- index ---------------------------------------------------------------------------
def _params(pairs) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"--param takes NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def dataset_items(data_dir: str, split: str, flat, rows=None):
    """Index items for a prepared split: images keyed by item id, captions by '<id>#<n>'.
    ``rows``: each item's row in the dataset as stored (screening may have dropped some)."""
    from retrieval.store import Item

    root = str(Path(data_dir).resolve())
    rows = range(len(flat.ids)) if rows is None else rows
    images = [Item(key=i, source=i, labels=list(flat.labels[n]),
                   extra={"dataset": root, "split": split, "row": int(rows[n])})
              for n, i in enumerate(flat.ids)]
    counters: dict[int, int] = {}
    texts = []
    for cap, owner in zip(flat.captions, flat.caption_item):
        c = counters.get(int(owner), 0)
        counters[int(owner)] = c + 1
        texts.append(Item(key=f"{flat.ids[owner]}#{c}", source=cap, labels=list(flat.labels[owner]),
                          extra={"image_key": flat.ids[owner], "dataset": root, "split": split}))
    return images, texts


def embed_splits(model, data_dir: str, splits, cache_dir) -> list:
    """Pending image and caption items of prepared splits (screened: unusable rows skipped)."""
    from crossmodal.data import load_prepared
    from crossmodal.data.screen import screen_prepared
    from crossmodal.data.splits import flatten_split
    from retrieval.ingest import Pending

    ds = load_prepared(data_dir, splits=splits)
    screening = screen_prepared(ds, splits, cache_dir)
    _print_screening(screening)
    pending = []
    for split in splits:
        flat = flatten_split(ds[split])
        img_side, txt_side = split_outputs(model, ds[split], flat, cache_dir, [])
        img_items, txt_items = dataset_items(data_dir, split, flat, screening[split].rows)
        pending += [Pending("image", img_items, img_side.relaxed), Pending("text", txt_items, txt_side.relaxed)]
    return pending


def _print_screening(screening) -> None:
    for report in screening.values():
        line = report.summary()
        if line:
            print(line)


def _resolve_removal_keys(idx, modality: str, keys) -> tuple[list[str], list[str]]:
    """Keys as stored: a file added with --images is keyed by its absolute path, so a
    relative or ``~`` path is resolved the same way. Returns (found, not found)."""
    from retrieval.store import item_id

    found, missing = [], []
    for key in keys:
        forms = [key, str(Path(key).expanduser().resolve())]
        hit = next((f for f in forms if idx.store.existing([item_id(modality, f)])), None)
        (found if hit is not None else missing).append(hit if hit is not None else key)
    return found, missing


def run_index(args):
    from crossmodal.errors import InvalidInput, NothingDone
    from crossmodal.model import CrossModalHasher
    from retrieval.index import CrossModalIndex, IndexMismatch, check_index_destination
    from retrieval.ingest import IngestReport, add_pending, commit, embed_image_files, embed_texts
    from crossmodal.cache import default_cache_dir

    cache = Path(args.cache_dir) if getattr(args, "cache_dir", None) else default_cache_dir()
    if args.index_command == "info":
        idx = CrossModalIndex.load(args.index)
        info = idx.info()
        info["model_path"] = idx.model_path
        print(json.dumps(info, indent=2))
        return info
    if args.index_command == "build":
        check_index_destination(args.out)  # before minutes of feature extraction, not after
        model = CrossModalHasher.from_pretrained(args.model)
        if args.bits not in model.config.bits:
            raise InvalidInput(f"--bits {args.bits}: this model serves code lengths {list(model.config.bits)}")
        idx = CrossModalIndex(args.bits, model.fingerprint(), args.type, _params(args.param), args.backend,
                              args.milvus_uri)
        idx.model_path = str(Path(args.model).resolve())
        pending = embed_splits(model, args.data, args.split.split(","), cache)
        add_pending(idx, model, pending, args.store_floats)
        idx.save(args.out)
        counts = {m: idx.count(m) for m in ("image", "text")}
        print(f"index written to {args.out}: {counts['image']} images, {counts['text']} texts, "
              f"{args.bits}-bit {args.type} ({args.backend})")
        return counts
    if args.index_command == "remove":
        with CrossModalIndex.updating(args.index) as idx:
            keys, missing = _resolve_removal_keys(idx, args.modality, args.keys)
            n = idx.remove_keys(args.modality, keys)
        for key in missing:
            print(f"not in the index: {args.modality} {key!r}", file=sys.stderr)
        if not n:
            raise NothingDone(f"nothing removed from {args.index}: no {args.modality} item has the key(s) given "
                              f"(image files are keyed by their absolute path, dataset items by their id, captions "
                              f"by their text or '<id>#<n>'); no new version was written")
        print(f"removed {n} {args.modality} item(s)")
        return n
    # add
    if not (args.data or args.images or args.texts):
        raise InvalidInput("index add: nothing to add: give --images FILE..., --texts TEXT... or --data DIR")
    live = CrossModalIndex.load(args.index)
    model_dir = args.model or live.model_path
    model = CrossModalHasher.from_pretrained(model_dir)
    if model.fingerprint() != live.model_fingerprint:
        raise IndexMismatch(f"{args.index} was built by model {live.model_fingerprint}, not by {model_dir}")
    del live
    report = IngestReport()
    pending = []
    if args.data:
        pending += embed_splits(model, args.data, args.split.split(","), cache)
    if args.images:
        pending.append(embed_image_files(model, args.images, report))
    if args.texts:
        from retrieval.search import check_query_texts
        pending.append(embed_texts(model, check_query_texts(args.texts)))
    if not any(p.items for p in pending):
        raise NothingDone(f"nothing added to {args.index}: none of the {len(report.failed)} input(s) could be read; "
                          f"no new version was written")
    commit(args.index, model, pending, args.store_floats, args.update, report)
    print(report.summary())
    return {"added": report.added, "skipped": report.skipped, "failed": len(report.failed)}


def run_search(args):
    from crossmodal.errors import InvalidInput
    from retrieval.search import Searcher

    searcher = Searcher.open(args.index, args.model)
    if args.text is not None:
        target = args.target or "image"
        hits = searcher.search_texts([args.text], target, args.k, args.radius, args.rerank)[0]
        query = {"text": args.text}
    else:
        from crossmodal.data import open_image_checked
        try:
            _, img = open_image_checked(args.image, min_side=searcher.model.image_encoder.image_size)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise InvalidInput(f"cannot read image {args.image}: {type(e).__name__}: {e}") from None
        target = args.target or "text"
        hits = searcher.search_images([img], target, args.k, args.radius, args.rerank)[0]
        query = {"image": args.image}
    if args.json:
        print(json.dumps({"query": query, "target": target, "bits": searcher.index.nbits,
                          "results": [h.to_dict() for h in hits]}, indent=2))
    else:
        print(f"{len(hits)} {target} result(s) for {next(iter(query.values()))!r} ({searcher.index.nbits}-bit codes)")
        print(f"{'rank':>4}  {'dist':>4}  {'key':<28}  source")
        for n, h in enumerate(hits, 1):
            src = (h.source or "")[:80]
            when = f"  @ {h.timestamp:.1f}s" if h.timestamp is not None else ""
            print(f"{n:>4}  {h.distance:>4}  {h.key[:28]:<28}  {src}{when}")
    return hits


# ---- video ---------------------------------------------------------------------------
def run_video(args):
    from retrieval.index import CrossModalIndex
    from retrieval.search import Searcher
    from retrieval.video import add_videos, image_to_moments, text_to_moments, video_captions

    searcher = Searcher.open(args.index, args.model)
    if args.video_command == "add":
        with CrossModalIndex.updating(args.index, searcher.model.fingerprint()) as index:  # serialised with other writers
            report = add_videos(index, searcher.model, args.videos, fps=args.fps, max_frames=args.max_frames,
                                dedup_radius=args.dedup_radius)
        print(report.summary())
        if report.failed and not report.videos_added:
            raise ValueError("no video could be added")
        return report
    if args.video_command == "search":
        if args.text is not None:
            moments = text_to_moments(searcher, args.text, top=args.k, radius=args.radius)
        else:
            from crossmodal.data import open_image_checked
            moments = image_to_moments(searcher, open_image_checked(args.image)[1], top=args.k, radius=args.radius)
        if args.json:
            print(json.dumps([m.to_dict() for m in moments], indent=2))
        else:
            print(f"{len(moments)} moment(s)")
            for n, m in enumerate(moments, 1):
                print(f"{n:>3}. {m.video}  {_clock(m.start)}-{_clock(m.end)}  best d={m.best_distance}  "
                      f"score={m.score:.3f}")
        return moments
    res = video_captions(searcher, args.video, k=args.k, fps=args.fps, max_frames=args.max_frames,
                         dedup_radius=args.dedup_radius)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.video}: {len(res['segments'])} segment(s)")
        for seg in res["segments"]:
            best = seg["captions"][0] if seg["captions"] else None
            print(f"  {_clock(seg['start'])}-{_clock(seg['end'])}  " +
                  (f"d={best['distance']}  {best['text']}" if best else "(no captions indexed)"))
        print("best captions for the whole video:")
        for b in res["summary"]:
            ranges = ", ".join(f"{_clock(s)}-{_clock(e)}" for s, e in b["ranges"])
            print(f"  d={b['best_distance']}  {b['text']}  [{ranges}]")
    return res


def _clock(t: float) -> str:
    return f"{int(t // 60)}:{t % 60:04.1f}"


EXAMPLES = {
    "train": """examples:
  crossmodal train --data data/flickr8k --out models/f8k
  crossmodal train --data data/mine --text-encoder gru --image-trainable last:1 --out models/mine""",
    "encode": """examples:
  crossmodal encode --model models/f8k --data data/flickr8k --split test --out codes.npz""",
    "eval": """examples:
  crossmodal eval --model models/f8k --data data/flickr8k --split test --out reports/f8k
  crossmodal eval --model models/fashion --data data/fashion --database train,dev --within --out reports/fashion""",
    "demo": """examples:
  crossmodal demo                      # the built-in dataset, offline, a few minutes
  crossmodal demo --epochs 5 --out runs/quick""",
    "index": """examples:
  crossmodal index build --model models/f8k --data data/flickr8k --bits 64 --out idx/f8k
  crossmodal index add --index idx/f8k --images photo1.jpg photo2.jpg
  crossmodal index info --index idx/f8k""",
    "index build": """examples:
  crossmodal index build --model models/f8k --data data/flickr8k --split test --bits 64 --out idx/f8k
  crossmodal index build --model models/f8k --data data/flickr8k --type ivf --param nlist=256 --out idx/ivf""",
    "index add": """examples:
  crossmodal index add --index idx/f8k --images new1.jpg new2.jpg
  crossmodal index add --index idx/f8k --texts "a dog on a beach" "two children at a table"\n""",
    "index remove": """examples:
  crossmodal index remove --index idx/f8k --modality image photos/new1.jpg
  crossmodal index remove --index idx/f8k --modality text "a dog on a beach"\n""",
    "index info": """examples:
  crossmodal index info --index idx/f8k""",
    "video": """examples:
  crossmodal video add --index idx/f8k clip.mp4
  crossmodal video search --index idx/f8k --text "a man rides a bike down a hill"\n""",
    "video add": """examples:
  crossmodal video add --index idx/f8k clip1.mp4 clip2.mkv --fps 1""",
    "video search": """examples:
  crossmodal video search --index idx/f8k --text "a man rides a bike down a hill" -k 5
  crossmodal video search --index idx/f8k --image still.jpg --json""",
    "video captions": """examples:
  crossmodal video captions --index idx/f8k clip1.mp4 --json""",
    "serve": """examples:
  crossmodal serve --index idx/f8k                       # http://127.0.0.1:8000
  crossmodal serve --index idx/f8k-32 --index idx/f8k-64 --allow-writes --write-token SECRET""",
    "search": """examples:
  crossmodal search --index idx/f8k --text "a dog runs through the snow" -k 10
  crossmodal search --index idx/f8k --image photo.jpg --target image --json""",
    "info": """examples:
  crossmodal info models/f8k
  crossmodal info idx/f8k""",
}


def _sub(sub, name: str, help: str, full_name: str | None = None, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                          epilog=EXAMPLES.get(full_name or name), **kw)


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import faiss
    import torch

    try:
        ours = version("crossmodal")
    except PackageNotFoundError:
        ours = "unknown (not installed)"
    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
    return (f"crossmodal {ours}\ntorch {torch.__version__}, faiss {faiss.__version__}, python "
            f"{sys.version.split()[0]}\ndevice: {device}")


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def run_info(args) -> dict:
    """What a model or an index folder holds, as JSON."""
    from crossmodal.errors import InvalidInput

    path = Path(args.path)
    if (path / "config.json").is_file():
        info = _model_info(path)
    elif (path / "CURRENT").is_file():
        from retrieval.index import CrossModalIndex
        idx = CrossModalIndex.load(path)
        info = {"kind": "index", "path": str(path.resolve()), "version": idx.version, **idx.info(),
                "created": idx.created, "model_path": idx.model_path}
        if idx.model_path and (Path(idx.model_path) / "config.json").is_file():
            info["model"] = _model_info(Path(idx.model_path))
    else:
        raise InvalidInput(f"{path} is neither a model folder (config.json) nor an index folder (CURRENT)")
    print(json.dumps(info, indent=2))
    return info


def _model_info(path: Path) -> dict:
    from crossmodal.model import CrossModalHasher

    model = CrossModalHasher.from_pretrained(path)
    cfg = model.config
    info = {"kind": "model", "path": str(path.resolve()), "bits": list(cfg.bits), "quantizer": cfg.quantizer,
            "fingerprint": model.fingerprint(),
            "image_encoder": {"name": cfg.image_encoder.name, "trainable": cfg.image_encoder.trainable,
                              "image_size": model.image_encoder.image_size},
            "text_encoder": {"name": cfg.text_encoder.name, "trainable": cfg.text_encoder.trainable},
            "head": asdict(cfg.head)}
    summary = path / "train_summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        info["training"] = {k: s.get(k) for k in ("data", "finished", "best_epoch", "best_score", "steps")}
        log = path / "train_log.jsonl"
        if log.is_file():
            epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            best = next((e for e in epochs if e.get("epoch") == s.get("best_epoch")), None)
            if best:
                info["training"]["validation"] = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    return info


def _index_and_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--model", default=None, help="model folder (default: the model recorded in the index)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter,
                                     epilog="run 'crossmodal COMMAND --help' for a command's options and examples")
    parser.add_argument("--version", action=_VersionAction, help="versions of crossmodal, torch and faiss, and the "
                                                                 "device training would use")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output (results and errors still print)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _sub(sub, "train", "train a model on a prepared dataset")
    add_train_args(p)
    p.set_defaults(func=run_train)
    p = sub.add_parser("encode", help="write packed codes of a split to an .npz",
                       description="write packed codes of a split to an .npz",
                       formatter_class=HelpFormatter, epilog=ENCODE_LAYOUT + "\n\n" + EXAMPLES["encode"])
    p.add_argument("--model", required=True, help="trained model folder")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test", help="split to encode")
    p.add_argument("--bits", type=_bits, default=None, help="code lengths (default: all the model serves)")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.set_defaults(func=run_encode)
    p = _sub(sub, "eval", "evaluate a model: metrics, baselines, plots, summary")
    p.add_argument("--model", required=True, help="trained model folder")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test", help="query split")
    p.add_argument("--database", default=None,
                   help="database split(s), comma-separated (default: the query split's other modality)")
    p.add_argument("--bits", type=_bits, default=None, help="code lengths (default: the model's, up to 64)")
    p.add_argument("--relevance", default="auto", choices=["auto", "pairs", "labels"],
                   help="what counts as relevant: the paired item, a shared label, or labels when the data has them")
    p.add_argument("--within", action="store_true", help="also image->image and text->text")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="skip the float, LSH, ITQ and CCA+ITQ baselines")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/crossmodal/features)")
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=run_eval)

    from .demo import add_demo_args, run_demo
    p = _sub(sub, "demo", "the whole job on the built-in dataset, offline (README's first command)")
    add_demo_args(p)
    p.set_defaults(func=run_demo)

    from retrieval.backends import BACKENDS, DEFAULT_PARAMS
    from retrieval.index import MODALITIES
    type_help = "; ".join(f"{t}: {', '.join(f'{k}={v}' for k, v in ps.items()) or 'no parameters'}"
                          for t, ps in DEFAULT_PARAMS.items())
    p = _sub(sub, "index", "build and maintain binary indexes")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = _sub(isub, "build", "index a prepared dataset split (images and captions)", "index build")
    b.add_argument("--model", required=True, help="trained model folder")
    b.add_argument("--data", required=True, help="prepared dataset folder")
    b.add_argument("--split", default="test", help="split(s), comma-separated")
    b.add_argument("--bits", type=int, default=64, help="code length (one the model serves)")
    b.add_argument("--type", default="flat", choices=list(DEFAULT_PARAMS), help=f"index type ({type_help})")
    b.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="an index parameter, repeatable (see --type for each type's parameters and defaults)")
    b.add_argument("--backend", default="faiss", choices=list(BACKENDS),
                   help="faiss (in this process) or milvus (a Milvus server or Milvus Lite file)")
    b.add_argument("--milvus-uri", default=None, help="Milvus Lite file or http://host:19530 (with --backend milvus)")
    b.add_argument("--store-floats", action="store_true", help="keep continuous outputs for --rerank")
    b.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/crossmodal/features)")
    b.add_argument("--out", required=True, help="index folder to write (new, empty, or an index)")
    a = _sub(isub, "add", "add items (a dataset split, image files or captions)", "index add")
    _index_and_model_args(a)
    a.add_argument("--data", default=None, help="a prepared dataset whose --split to add")
    a.add_argument("--split", default="test", help="split(s) of --data, comma-separated")
    a.add_argument("--images", nargs="*", default=None, metavar="FILE", help="image files")
    a.add_argument("--texts", nargs="*", default=None, metavar="TEXT", help="captions")
    a.add_argument("--update", action="store_true", help="replace items already present")
    a.add_argument("--store-floats", action="store_true", help="keep continuous outputs for --rerank")
    a.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/crossmodal/features)")
    r = _sub(isub, "remove", "remove items by key", "index remove")
    r.add_argument("--index", required=True, help="index folder")
    r.add_argument("--modality", default="image", choices=list(MODALITIES), help="which items the keys name")
    r.add_argument("keys", nargs="+", help="image file paths, dataset item ids, caption texts or '<id>#<n>'")
    i = _sub(isub, "info", "what an index holds", "index info")
    i.add_argument("--index", required=True, help="index folder")
    p.set_defaults(func=run_index)

    def sampling_args(sp):
        sp.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
        sp.add_argument("--max-frames", type=int, default=None, help="stop after this many sampled frames per video")
        sp.add_argument("--dedup-radius", type=int, default=2, help="skip frames this close to the last kept one")

    p = _sub(sub, "video", "video moments and caption lookup through frame encoding")
    vsub = p.add_subparsers(dest="video_command", required=True, metavar="ACTION")
    v = _sub(vsub, "add", "sample, encode and index the frames of videos", "video add")
    _index_and_model_args(v)
    v.add_argument("videos", nargs="+", help="video files (anything PyAV/FFmpeg reads)")
    sampling_args(v)
    v = _sub(vsub, "search", "find moments by text or image", "video search")
    _index_and_model_args(v)
    g = v.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", help="describe the moment")
    g.add_argument("--image", help="an image like the moment")
    v.add_argument("-k", type=_count(1), default=10, help="moments to show")
    v.add_argument("--radius", type=_count(0), default=None, help="only frames within this Hamming distance")
    v.add_argument("--json", action="store_true", help="print JSON")
    v = _sub(vsub, "captions", "caption lookup for a video", "video captions")
    _index_and_model_args(v)
    v.add_argument("video", help="a video file (indexed or not)")
    v.add_argument("-k", type=_count(1), default=3, help="captions per segment")
    sampling_args(v)
    v.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_video)

    p = _sub(sub, "serve", "HTTP service and web page over one or more indexes")
    p.add_argument("--index", action="append", required=True, help="an index folder (repeat for other code lengths)")
    p.add_argument("--model", default=None, help="model folder (default: the model recorded in the index)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--allow-writes", action="store_true", help="enable POST /api/index/texts (needs --write-token)")
    p.add_argument("--write-token", default=None, help="bearer token that write requests must carry")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest image upload, in MB")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="refuse uploads announcing more pixels, before decoding (default: 40, or CROSSMODAL_MAX_PIXELS)")
    p.set_defaults(func=lambda a: __import__("retrieval.service", fromlist=["serve"]).serve(
        a.index, a.model, a.host, a.port, a.allow_writes, a.write_token, int(a.max_upload_mb * 1024 * 1024),
        int(a.max_megapixels * 1e6) if a.max_megapixels else None))

    p = _sub(sub, "search", "search an index by text or image")
    _index_and_model_args(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="a caption to search with")
    q.add_argument("--image", help="an image file to search with")
    p.add_argument("--target", default=None, choices=list(MODALITIES),
                   help="what to find (default: the other modality)")
    p.add_argument("-k", type=_count(1), default=10, help="results to show (at most the index's size)")
    p.add_argument("--radius", type=_count(0), default=None, help="Hamming radius search")
    p.add_argument("--rerank", type=_count(0), default=0, help="re-rank the top N by continuous outputs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_search)

    p = _sub(sub, "info", "what a model or an index holds: code lengths, encoders, fingerprint, training")
    p.add_argument("path", help="a model folder or an index folder")
    p.set_defaults(func=run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from crossmodal.errors import CrossmodalError

    args = build_parser().parse_args(argv)
    from crossmodal.progress import quiet, set_quiet
    if args.quiet:
        set_quiet(True)
    if quiet() or not sys.stderr.isatty():
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()  # datasets' own bars: frames of carriage returns in a log
    try:
        args.func(args)
    except CrossmodalError as e:
        print(f"crossmodal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"crossmodal {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0
