"""Retrieval metrics in pure numpy (after faiss ``contrib/evaluation.py``).

Conventions, used by every function here:

* A ranking sorts the database by Hamming distance ascending; items at equal distance
  keep database order (a stable sort), so every ranking is deterministic.
* ``relevance`` is a boolean matrix [Q, N]: ``relevance[q, n]`` says whether database
  item n is relevant to query q (pair-based or label-based, see ``*_relevance``).
* Queries with no relevant item in the database are excluded from means; functions
  that average return how many were excluded.
"""
from __future__ import annotations

import numpy as np


def rank_by_distance(distances: np.ndarray) -> np.ndarray:
    """[Q, N] distances -> [Q, N] database indices, nearest first, ties in index order."""
    return np.argsort(distances, axis=1, kind="stable")


def pair_relevance(query_groups: np.ndarray, database_groups: np.ndarray) -> np.ndarray:
    """Pair-based relevance: an item is relevant when it belongs to the same image
    (a caption's image; an image's captions). Groups are the image index of each item."""
    return np.asarray(query_groups)[:, None] == np.asarray(database_groups)[None, :]


def label_relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """Label-based relevance from multi-hot [Q, L] and [N, L]: share at least one label."""
    q = np.asarray(query_labels, dtype=np.float32)
    d = np.asarray(database_labels, dtype=np.float32)
    return (q @ d.T) > 0


def recall_at_k(ranking: np.ndarray, relevance: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Share of queries with at least one relevant item in the top k (in percent, as the
    caption-retrieval literature reports it). Queries with no relevant item are excluded."""
    rel_sorted = np.take_along_axis(relevance, ranking, axis=1)
    valid = relevance.any(1)
    first = np.where(rel_sorted.any(1), rel_sorted.argmax(1), rel_sorted.shape[1])
    out = {f"R@{k}": float(100.0 * (first[valid] < k).mean()) if valid.any() else float("nan") for k in ks}
    out["median_rank"] = float(np.median(first[valid] + 1)) if valid.any() else float("nan")
    out["mean_rank"] = float(np.mean(first[valid] + 1)) if valid.any() else float("nan")
    out["queries_without_relevant"] = int((~valid).sum())
    return out


def average_precision(ranking: np.ndarray, relevance: np.ndarray, k: int | None = None) -> np.ndarray:
    """AP per query over the top k (all when None), normalised by the number of relevant
    items *found in the top k* (the DCMH / DeepHash convention for mAP@K; for k=None this
    is ordinary AP). Queries with none found get NaN."""
    rel_sorted = np.take_along_axis(relevance, ranking, axis=1)
    if k is not None:
        rel_sorted = rel_sorted[:, :k]
    hits = np.cumsum(rel_sorted, axis=1)
    positions = np.arange(1, rel_sorted.shape[1] + 1)
    precision_at_hit = np.where(rel_sorted, hits / positions, 0.0)
    n_rel = rel_sorted.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, precision_at_hit.sum(1) / n_rel, np.nan)


def mean_average_precision(ranking: np.ndarray, relevance: np.ndarray, k: int | None = None) -> dict[str, float]:
    ap = average_precision(ranking, relevance, k)
    valid = relevance.any(1)
    name = "mAP" if k is None else f"mAP@{k}"
    ap_valid = ap[valid]
    # A query whose relevant items all fall outside the top k scores 0.
    ap_valid = np.where(np.isnan(ap_valid), 0.0, ap_valid)
    return {name: float(ap_valid.mean()) if len(ap_valid) else float("nan"),
            "queries_without_relevant": int((~valid).sum())}
