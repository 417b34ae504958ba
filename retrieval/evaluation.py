"""Cross-modal evaluation on one split: both directions, pair- or label-based relevance.

``crossmodal_scores`` is the workhorse; ``validation_scorer`` adapts it to the trainer's
scorer signature (the CLI passes it in, so ``training`` never imports ``retrieval``).
"""
from __future__ import annotations

import numpy as np

from crossmodal.codes import hamming_distances
from crossmodal.data.splits import FlatSplit

from .metrics import label_relevance, mean_average_precision, pair_relevance, rank_by_distance, recall_at_k


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
        out["score"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]))
    else:
        caption_labels = labels[split.caption_item]
        rel_i2t = label_relevance(labels, caption_labels)
        i2t = mean_average_precision(rank_by_distance(d_i2t), rel_i2t)
        t2i = mean_average_precision(rank_by_distance(d_i2t.T), rel_i2t.T)
        out = {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}
        out["score"] = 0.5 * (out["i2t_mAP"] + out["t2i_mAP"])
    return out


def validation_scorer(image_codes, text_codes, split: FlatSplit, labels) -> dict[str, float]:
    return crossmodal_scores(image_codes, text_codes, split, labels)
