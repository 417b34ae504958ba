"""Cross-modal evaluation on one split: both directions, pair- or label-based relevance.

``crossmodal_scores`` is the workhorse; ``validation_scorer`` adapts it to the trainer's
scorer signature (the CLI passes it in, so ``training`` never imports ``retrieval``).
``evaluate_prepared`` is the whole evaluation of a model on a prepared dataset, used by
``crossmodal eval`` and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.codes import hamming_distances
from crossmodal.data.splits import FlatSplit

from .metrics import label_relevance, mean_average_precision, pair_relevance, rank_by_distance, recall_at_k
from .protocol import selection_score


def crossmodal_scores(image_codes: np.ndarray, text_codes: np.ndarray, split: FlatSplit,
                      labels: np.ndarray | None = None, ks=(1, 5, 10)) -> dict[str, float]:
    """image->text and text->image scores of packed codes.

    Without labels: Recall@K (a caption's own image is its only positive; any of an
    image's captions is a hit). With a multi-hot ``labels`` [N, L]: mAP@all, relevance
    = sharing a label. ``score`` is the mean over directions (and over K for recall).
    """
    d_i2t = hamming_distances(image_codes, text_codes)
    items = np.arange(len(split.ids))
    if labels is None:
        rel_i2t = pair_relevance(items, split.caption_item)
        i2t = recall_at_k(rank_by_distance(d_i2t), rel_i2t, ks)
        t2i = recall_at_k(rank_by_distance(d_i2t.T), rel_i2t.T, ks)
        out = {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}
    else:
        caption_labels = labels[split.caption_item]
        rel_i2t = label_relevance(labels, caption_labels)
        i2t = mean_average_precision(rank_by_distance(d_i2t), rel_i2t)
        t2i = mean_average_precision(rank_by_distance(d_i2t.T), rel_i2t.T)
        out = {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}
    out["score"] = selection_score({"i2t": i2t, "t2i": t2i}, "pairs" if labels is None else "labels", ks)
    return out


def validation_scorer(image_codes, text_codes, split: FlatSplit, labels) -> dict[str, float]:
    return crossmodal_scores(image_codes, text_codes, split, labels)


# ---- a model on a prepared dataset: the pipeline behind `crossmodal eval` ----------------
@dataclass
class DatasetEvaluation:
    """What :func:`evaluate_prepared` returns: the report, example queries, a loader of
    any evaluated item's image (for report thumbnails) and the screening per split."""
    report: dict
    examples: list[dict]
    load_image: Callable[[str], object]
    screening: dict


def _side(relaxed, raw, item_ids, labels, texts=None):
    from .protocol import Side
    return Side(relaxed, list(item_ids), labels, raw, texts=texts)


def _concat_sides(sides):
    from .protocol import Side

    cat = lambda xs: None if any(x is None for x in xs) else np.concatenate(xs)  # noqa: E731
    return Side(np.concatenate([s.relaxed for s in sides]), [i for s in sides for i in s.item_ids],
                cat([s.labels for s in sides]), cat([s.raw for s in sides]),
                None if any(s.texts is None for s in sides) else [t for s in sides for t in s.texts])


def evaluate_prepared(model, data_dir, split: str = "test", database: Sequence[str] = (),
                      bits: Sequence[int] | None = None, relevance: str = "auto", within: bool = False,
                      baselines: bool = True, cache_dir: Path | None = None, n_examples: int = 3,
                      image_views: str | None = None, rerank: int | None = None,
                      rerank_dtype: str = "int8") -> DatasetEvaluation:
    """Evaluate ``model`` with ``split`` as queries against ``database`` splits (or the
    split's other modality): metrics at each code length beside the baselines."""
    from crossmodal.data import load_prepared
    from crossmodal.data.screen import screen_prepared
    from crossmodal.data.splits import flatten_split, label_vocab
    from crossmodal.errors import InvalidInput
    from crossmodal.features import decode_image, relaxed_outputs
    from datasets import Image as HFImage

    from .protocol import BaselineData, EvalConfig, ItemSet, evaluate

    bits = tuple(bits or tuple(b for b in model.config.bits if b <= 64) or model.config.bits)
    database = list(database)
    if split in database:
        raise InvalidInput(f"--database must not include the query split {split!r}")
    ds = load_prepared(data_dir, splits=[split, *database])
    screened = [split, *database] + ([s for s in ("train", "dev", "validation") if s in ds] if baselines else [])
    screening = screen_prepared(ds, list(dict.fromkeys(screened)), cache_dir)
    flats = {s: flatten_split(ds[s]) for s in [split, *database]}
    use_labels = relevance == "labels" or (relevance == "auto" and flats[split].has_labels)
    vocab = label_vocab(*flats.values()) if use_labels else []

    def sides(s, flat, vocab, views=image_views):
        out = relaxed_outputs(model, ds[s], flat.captions, cache_dir, views)
        labels = flat.label_matrix(vocab) if vocab else None
        return (_side(out.image_relaxed, out.image_features, flat.ids, labels),
                _side(out.text_relaxed, out.text_features, [flat.ids[i] for i in flat.caption_item],
                      labels[flat.caption_item] if labels is not None else None, texts=list(flat.captions)))

    outputs = {s: sides(s, flats[s], vocab) for s in flats}
    query = ItemSet(*outputs[split], splits=[split])
    db = None
    if database:
        db = ItemSet(_concat_sides([outputs[s][0] for s in database]),
                     _concat_sides([outputs[s][1] for s in database]), splits=database)
    fit = None
    if baselines and "train" in ds and split != "train":
        # baselines fit on train (CCA's ridge chosen on dev), with the plain features alone:
        # no test-time views of the splits they learn from
        def fit_side(s):
            if s in outputs and s != split:
                return ItemSet(*outputs[s], splits=[s])
            return ItemSet(*sides(s, flats.get(s) or flatten_split(ds[s]), vocab if s != "train" else [], "plain"),
                           splits=[s])
        dev = next((s for s in ("dev", "validation") if s in ds and s not in (split, *database)), None)
        fit = BaselineData(fit_side("train"), fit_side(dev) if dev else None)
    cfg = EvalConfig(bits=bits, relevance="labels" if use_labels else "pairs", within=within, baselines=baselines,
                     rerank=rerank, rerank_dtype=rerank_dtype)
    report = evaluate(model.quantize, query, db, cfg, fit)
    report["model"] = {"fingerprint": model.fingerprint(), "quantizer": model.config.quantizer,
                       "image_views": image_views or model.config.image_views}
    report["data"] = str(data_dir)

    examples = example_queries(model, query, db or query, max(bits), use_labels, n_examples)
    where = {item: (s, i) for s in flats for i, item in enumerate(flats[s].ids)}
    raw_images = {s: ds[s].cast_column("image", HFImage(decode=False)) for s in flats}

    def load_image(item: str):
        s, i = where[item]
        return decode_image(raw_images[s][i]["image"])

    return DatasetEvaluation(report, examples, load_image, screening)


def example_queries(model, query, db, nbits: int, use_labels: bool, n: int = 3, top: int = 5) -> list[dict]:
    """A few text->image and image->text queries with their top results (for reports)."""
    img_codes_q, txt_codes_q = model.quantize(query.images.relaxed, nbits), model.quantize(query.texts.relaxed, nbits)
    img_codes_d, txt_codes_d = model.quantize(db.images.relaxed, nbits), model.quantize(db.texts.relaxed, nbits)

    def relevant(q_side, qi, d_side, dj) -> bool:
        if use_labels:
            return bool((q_side.labels[qi] & d_side.labels[dj]).any())
        return q_side.item_ids[qi] == d_side.item_ids[dj]

    examples = []
    rng = np.random.default_rng(0)
    for qi in rng.choice(len(query.texts), size=min(n, len(query.texts)), replace=False):
        d = hamming_distances(txt_codes_q[qi:qi + 1], img_codes_d)[0]
        examples.append({"direction": "t2i", "query": query.texts.texts[qi], "results": [
            {"id": db.images.item_ids[j], "distance": int(d[j]), "relevant": relevant(query.texts, qi, db.images, j)}
            for j in np.argsort(d, kind="stable")[:top]]})
    for qi in rng.choice(len(query.images), size=min(n, len(query.images)), replace=False):
        d = hamming_distances(img_codes_q[qi:qi + 1], txt_codes_d)[0]
        examples.append({"direction": "i2t", "query": query.images.item_ids[qi], "results": [
            {"id": db.texts.item_ids[j], "distance": int(d[j]), "text": db.texts.texts[j],
             "relevant": relevant(query.images, qi, db.texts, j)} for j in np.argsort(d, kind="stable")[:top]]})
    return examples
