"""Cross-modal evaluation of a model on a prepared dataset, and validation during training.

Both run the one evaluator, :func:`retrieval.protocol.evaluate`: ``evaluate_prepared``
is ``crossmodal eval`` (and the demo); :class:`ValidationEvaluator` is the same evaluator
configured for the trainer (one code length, sign codes, no baselines), so the score that
picks the best epoch is the ``score`` a report on the dev split shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.codes import hamming_distances, sign_codes
from crossmodal.data.splits import FlatSplit

from .protocol import EvalConfig, ItemSet, Side, evaluate


class ValidationEvaluator:
    """The trainer's scorer (``training.trainer.Scorer``): the dev split's outputs, scored
    by the protocol evaluator at the validation code length on sign codes. Returns each
    direction's R@K (pairs) or mAP (labels) and ``score``, the number the best epoch is
    picked by (``retrieval.protocol.selection_score``)."""

    def __init__(self, config: EvalConfig | None = None):
        self.config = config or EvalConfig(baselines=False, rerank=0, detail=False)

    def __call__(self, image_relaxed: np.ndarray, text_relaxed: np.ndarray, split: FlatSplit,
                 labels: np.ndarray | None, nbits: int) -> dict[str, float]:
        query = ItemSet(*split_sides(split, image_relaxed, text_relaxed, labels))
        cfg = EvalConfig(**{**self.config.__dict__, "bits": (nbits,),
                            "relevance": "pairs" if labels is None else "labels"})
        report = evaluate(sign_codes, query, None, cfg)
        keep = [f"R@{k}" for k in cfg.recall_ks] + ["mAP"] if labels is None else ["mAP", "mAP_tie_aware"]
        out = {f"{d}_{k}": report["results"][d][str(nbits)][k] for d in ("i2t", "t2i") for k in keep}
        out["score"] = report["score"][str(nbits)]
        return out


# ---- a model on a prepared dataset: the pipeline behind `crossmodal eval` ----------------
@dataclass
class DatasetEvaluation:
    """What :func:`evaluate_prepared` returns: the report, example queries, a loader of
    any evaluated item's image (for report thumbnails) and the screening per split."""
    report: dict
    examples: list[dict]
    load_image: Callable[[str], object]
    screening: dict


def split_sides(flat: FlatSplit, image_relaxed: np.ndarray, text_relaxed: np.ndarray, labels: np.ndarray | None,
                image_raw: np.ndarray | None = None, text_raw: np.ndarray | None = None) -> tuple[Side, Side]:
    """A split's image and caption sides: a caption belongs to its image's item and has
    its labels."""
    return (Side(image_relaxed, list(flat.ids), labels, image_raw),
            Side(text_relaxed, flat.caption_owners(), None if labels is None else labels[flat.caption_item], text_raw,
                 texts=list(flat.captions)))


def _concat_sides(sides):
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
    from crossmodal.data.prepared import PreparedSplits
    from crossmodal.data.splits import label_vocab
    from crossmodal.errors import InvalidInput
    from crossmodal.data.images import open_cell
    from datasets import Image as HFImage

    from .protocol import BaselineData

    bits = tuple(bits or tuple(b for b in model.config.bits if b <= 64) or model.config.bits)
    database = list(database)
    if split in database:
        raise InvalidInput(f"--database must not include the query split {split!r}")
    ds = PreparedSplits.open(data_dir, [split, *database], cache_dir,
                             also_screen=("train", "dev", "validation") if baselines else ())
    flats = {s: ds.flat(s) for s in [split, *database]}
    use_labels = relevance == "labels" or (relevance == "auto" and flats[split].has_labels)
    vocab = label_vocab(*flats.values()) if use_labels else []

    def sides(s, flat, vocab, views=image_views):
        out = ds.outputs(model, s, views)
        labels = flat.label_matrix(vocab) if vocab else None
        return split_sides(flat, out.image_relaxed, out.text_relaxed, labels, out.image_features, out.text_features)

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
            return ItemSet(*sides(s, ds.flat(s), vocab if s != "train" else [], "plain"),
                           splits=[s])
        # dev items may also sit in the database (fashion: test vs train+dev): the ridge is
        # chosen by dev queries against dev items, so no test query takes part in the choice
        dev = next((s for s in ("dev", "validation") if s in ds and s != split), None)
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
        return open_cell(raw_images[s][i]["image"])

    return DatasetEvaluation(report, examples, load_image, ds.screening)


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
