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


#: queries handled at once by the per-query metrics: their temporaries are [rows, N] arrays
#: of float64, so 5,000 caption queries over 1,000 images at once would hold ~1 GB
ROW_BLOCK = 256


def _by_row_blocks(fn, *arrays):
    """``fn`` applied to blocks of query rows, its per-query outputs joined (same values,
    bounded memory)."""
    n = len(arrays[0])
    if n <= ROW_BLOCK:
        return fn(*arrays)
    parts = [fn(*(a[s:s + ROW_BLOCK] for a in arrays)) for s in range(0, n, ROW_BLOCK)]
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)


def average_precision(ranking: np.ndarray, relevance: np.ndarray, k: int | None = None) -> np.ndarray:
    """AP per query over the top k (all when None), normalised by the number of relevant
    items *found in the top k* (the DCMH / DeepHash convention for mAP@K; for k=None this
    is ordinary AP). Queries with none found get NaN."""
    return _by_row_blocks(lambda rk, rl: _average_precision(rk, rl, k), ranking, relevance)


def _average_precision(ranking: np.ndarray, relevance: np.ndarray, k: int | None) -> np.ndarray:
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


# ---- tie-aware AP (McSherry & Najork, ECIR 2008) -------------------------------------------
def _tie_groups(sorted_distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For distances sorted ascending per row: the start position of each position's tie
    group and the group's size, both [Q, N]."""
    q, n = sorted_distances.shape
    new_group = np.ones((q, n), dtype=bool)
    new_group[:, 1:] = sorted_distances[:, 1:] != sorted_distances[:, :-1]
    pos = np.broadcast_to(np.arange(n), (q, n))
    start = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    # group end: reverse accumulate of "last position of group"
    last = np.ones((q, n), dtype=bool)
    last[:, :-1] = new_group[:, 1:]
    end_rev = np.minimum.accumulate(np.where(last, pos, n)[:, ::-1], axis=1)[:, ::-1]
    return start, end_rev - start + 1


def tie_aware_average_precision(distances: np.ndarray, relevance: np.ndarray) -> dict[str, np.ndarray]:
    """Expected AP when items at equal distance come in uniformly random order, computed
    exactly, with the best case (relevant first within ties) and worst case (last).

    For a tie group of n items holding t relevant ones, with i items and r relevant items
    ranked before it, a relevant item at in-group position k has precision
    (r + 1 + E[relevant among the k-1 before it]) / (i + k), where that expectation is
    (k-1)(t-1)/(n-1); position k is relevant with probability t/n. Summing over k and
    dividing by the total number of relevant items gives the expected AP. Queries with
    no relevant item get NaN.
    """
    return _by_row_blocks(_tie_aware_average_precision, np.asarray(distances), np.asarray(relevance, dtype=bool))


def _tie_aware_average_precision(distances: np.ndarray, relevance: np.ndarray) -> dict[str, np.ndarray]:
    order = np.argsort(distances, axis=1, kind="stable")
    d = np.take_along_axis(distances, order, axis=1)
    rel = np.take_along_axis(relevance, order, axis=1)
    q, n = d.shape
    start, size = _tie_groups(d)
    cum = np.cumsum(rel, axis=1)
    rows = np.arange(q)[:, None]
    end = start + size - 1
    t = cum[rows, end] - np.where(start > 0, cum[rows, np.maximum(start - 1, 0)], 0)
    r_before = cum[rows, end] - t
    pos = np.arange(1, n + 1)[None, :]
    k = pos - start  # 1-based position inside the group
    other = np.where(size > 1, (k - 1) * (t - 1) / np.maximum(size - 1, 1), 0.0)
    contrib = (t / size) * (r_before + 1 + other) / pos
    n_rel = rel.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(n_rel > 0, contrib.sum(1) / n_rel, np.nan)
    best = average_precision(np.argsort(distances - 0.5 * relevance, axis=1, kind="stable"), relevance)
    worst = average_precision(np.argsort(distances + 0.5 * relevance, axis=1, kind="stable"), relevance)
    return {"expected": expected, "best": best, "worst": worst}


def tie_aware_map(distances: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """Mean of :func:`tie_aware_average_precision` over queries with a relevant item."""
    valid = relevance.any(1)
    res = tie_aware_average_precision(distances[valid], relevance[valid])
    return {"mAP_tie_aware": _nanmean(res["expected"]), "mAP_best_case": _nanmean(res["best"]),
            "mAP_worst_case": _nanmean(res["worst"]), "queries_without_relevant": int((~valid).sum())}


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if len(x) and not np.all(np.isnan(x)) else float("nan")


# ---- precision / recall ----------------------------------------------------------------------
def precision_at_k(ranking: np.ndarray, relevance: np.ndarray, ks=(1, 5, 10, 100)) -> dict[str, float]:
    """Share of relevant items among the top k, averaged over queries with a relevant item.
    When k exceeds the database size, the denominator is still k (missing slots count as
    misses), as in faiss' and most papers' convention."""
    rel_sorted = np.take_along_axis(relevance, ranking, axis=1)
    valid = relevance.any(1)
    return {f"P@{k}": float(rel_sorted[valid, :k].sum(1).mean() / k) if valid.any() else float("nan") for k in ks}


def item_recall_at_k(ranking: np.ndarray, relevance: np.ndarray, ks=(1, 5, 10, 100)) -> dict[str, float]:
    """Share of a query's relevant items found in the top k (item-based recall)."""
    rel_sorted = np.take_along_axis(relevance, ranking, axis=1)
    valid = relevance.any(1)
    total = relevance.sum(1)
    return {f"itemR@{k}": float((rel_sorted[valid, :k].sum(1) / total[valid]).mean()) if valid.any()
            else float("nan") for k in ks}


def radius_precision_recall(distances: np.ndarray, relevance: np.ndarray, radii) -> dict[str, list[float]]:
    """Precision and recall of the items within Hamming radius r, for each r.

    A query that retrieves nothing within r has precision 0 (the DPSH / DeepHash
    convention: an empty answer is a failed answer); queries with no relevant item are
    excluded. ``retrieved`` is the mean number of items within the radius."""
    valid = relevance.any(1)
    d, rel = distances[valid], relevance[valid]
    total_rel = rel.sum(1)
    prec, rec, retrieved = [], [], []
    for r in radii:
        within = d <= r
        n = within.sum(1)
        hits = (within & rel).sum(1)
        prec.append(float(np.where(n > 0, hits / np.maximum(n, 1), 0.0).mean()) if len(d) else float("nan"))
        rec.append(float((hits / total_rel).mean()) if len(d) else float("nan"))
        retrieved.append(float(n.mean()) if len(d) else float("nan"))
    return {"radius": [int(r) for r in radii], "precision": prec, "recall": rec, "retrieved": retrieved}


def ndcg_at_k(ranking: np.ndarray, gains: np.ndarray, k: int = 100) -> float:
    """NDCG@k with graded relevance ``gains`` [Q, N] (e.g. the number of shared labels),
    gain (2^g - 1), log2 discount. Queries whose ideal DCG is 0 are excluded."""
    g = np.take_along_axis(gains.astype(np.float64), ranking, axis=1)[:, :k]
    disc = 1.0 / np.log2(np.arange(2, g.shape[1] + 2))
    dcg = ((2 ** g - 1) * disc).sum(1)
    ideal = -np.sort(-gains.astype(np.float64), axis=1)[:, :k]
    idcg = ((2 ** ideal - 1) * disc[: ideal.shape[1]]).sum(1)
    valid = idcg > 0
    return float((dcg[valid] / idcg[valid]).mean()) if valid.any() else float("nan")


# ---- code health -------------------------------------------------------------------------------
def code_health(codes: np.ndarray, nbits: int) -> dict[str, float]:
    """Collision rate (share of items whose code equals another item's), per-bit balance
    (mean of |share of ones - 0.5|, 0 is perfect) and mean bit entropy (1 is perfect)."""
    codes = np.asarray(codes, dtype=np.uint8)
    if len(codes) == 0:
        return {"collision_rate": float("nan"), "bit_imbalance": float("nan"), "bit_entropy": float("nan")}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    collided = counts[inverse.ravel()] > 1
    bits = np.unpackbits(codes, axis=1)[:, :nbits].astype(np.float64)
    p = bits.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))
    return {"collision_rate": float(collided.mean()), "bit_imbalance": float(np.abs(p - 0.5).mean()),
            "bit_entropy": float(ent.mean()), "distinct_codes": int(len(counts))}


def matched_distance_gap(distances: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """Mean Hamming distance of relevant (matched) and irrelevant (unmatched) pairs."""
    return {"mean_distance_matched": float(distances[relevance].mean()) if relevance.any() else float("nan"),
            "mean_distance_unmatched": float(distances[~relevance].mean()) if (~relevance).any() else float("nan")}
