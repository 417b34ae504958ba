"""The evaluation protocol: queries from one split, a database from one or more splits,
both cross-modal directions (and within-modality when asked), the learned codes at
every code length beside the baselines.

Works on arrays (model outputs and backbone features), so it never runs a network
itself; the CLI gathers the arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from crossmodal.progress import progress

from crossmodal.codes import hamming_distances
from crossmodal.errors import InvalidInput

from . import metrics as M
from .baselines import CCA, CCAITQ, ITQ, LSH, cosine_distances
from .rerank import default_candidates

#: how reports and tables name each baseline: LSH and ITQ binarise crossmodal's own float
#: outputs after the fact (quantisers, not cross-modal methods); CCA+ITQ is the classical
#: cross-modal hashing baseline on the backbone features
BASELINE_NAMES = {"lsh": "LSH of our floats", "itq": "ITQ of our floats", "cca_itq": "CCA+ITQ"}
#: ridges CCA+ITQ tries on dev (fractions of the mean variance); on Flickr8k dev the score
#: still rose at 1.0, the old grid's edge, so the grid goes on to 100 (where the whitening
#: has all but vanished and CCA tends to PLS)
CCA_RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass
class Side:
    """One modality of a set of items."""

    relaxed: np.ndarray  # [n, Kmax] pre-sign model outputs
    item_ids: list[str]  # the item each row belongs to (an image's id; a caption's image id)
    labels: np.ndarray | None = None  # multi-hot [n, L]
    raw: np.ndarray | None = None  # backbone features, for the CCA baseline
    texts: list[str] | None = None  # captions (for example queries in reports)

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class ItemSet:
    images: Side
    texts: Side
    splits: list[str] = field(default_factory=list)


@dataclass
class BaselineData:
    """What the baselines are fitted on, never the evaluated items: the training split
    (float outputs for the post-hoc quantisers, backbone features of its pairs for CCA)
    and the dev split, on which CCA's ridge is chosen."""
    train: ItemSet
    dev: ItemSet | None = None


@dataclass
class EvalConfig:
    bits: tuple[int, ...] = (16, 32, 64)
    relevance: str = "auto"  # "pairs" | "labels" | "auto" (labels when present)
    within: bool = False
    baselines: bool = True
    recall_ks: tuple[int, ...] = (1, 5, 10)
    precision_ks: tuple[int, ...] = (1, 5, 10, 100)
    map_k: int = 100
    seed: int = 0
    #: > 0: also measure the served two-stage search (``served``): the Hamming top-N
    #: re-ranked by cosine of the stored outputs (``retrieval.rerank``); None: the N a new
    #: index uses at each code length (``retrieval.rerank.DEFAULT_CANDIDATES``)
    rerank: int | None = 0
    rerank_dtype: str = "int8"
    #: False: each direction gets only what the selection score and its parts need (mAP,
    #: R@K, and the tie-aware mAP with labels): validation runs after every epoch, and the
    #: precision/radius curves a report shows cost it more than half of an epoch's time
    detail: bool = True


def check_no_leak(query: ItemSet, database: ItemSet) -> None:
    """No query item may be in the database (when they come from different splits)."""
    q = set(query.images.item_ids) | set(query.texts.item_ids)
    d = set(database.images.item_ids) | set(database.texts.item_ids)
    leaked = q & d
    if leaked:
        raise InvalidInput(f"{len(leaked)} query item(s) are also in the database (e.g. {sorted(leaked)[:3]}); "
                         f"queries and database must not overlap")


def _relevance(q: Side, d: Side, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    if mode == "labels":
        return M.label_relevance(q.labels, d.labels), (q.labels.astype(np.float32) @ d.labels.T.astype(np.float32))
    qi = {v: i for i, v in enumerate(dict.fromkeys(list(q.item_ids) + list(d.item_ids)))}
    return M.pair_relevance(np.array([qi[x] for x in q.item_ids]), np.array([qi[x] for x in d.item_ids])), None


def direction_metrics(dist: np.ndarray, rel: np.ndarray, cfg: EvalConfig, nbits: int | None,
                      gains: np.ndarray | None = None) -> dict:
    ranking = M.rank_by_distance(dist)
    out: dict = {}
    out.update({k: v for k, v in M.mean_average_precision(ranking, rel).items()})
    if not cfg.detail:
        out.update(M.recall_at_k(ranking, rel, cfg.recall_ks))
        if nbits is not None and cfg.relevance == "labels":
            out["mAP_tie_aware"] = M.tie_aware_map(dist, rel)["mAP_tie_aware"]
        return out
    out[f"mAP@{cfg.map_k}"] = M.mean_average_precision(ranking, rel, cfg.map_k)[f"mAP@{cfg.map_k}"]
    out.update(M.recall_at_k(ranking, rel, cfg.recall_ks))
    out.update(M.precision_at_k(ranking, rel, cfg.precision_ks))
    out.update(M.item_recall_at_k(ranking, rel, cfg.precision_ks))
    if gains is not None:
        out["NDCG@100"] = M.ndcg_at_k(ranking, gains, 100)
    if nbits is not None:
        out.update({k: v for k, v in M.tie_aware_map(dist, rel).items() if k != "queries_without_relevant"})
        curve = M.radius_precision_recall(dist, rel, range(nbits + 1))
        for r in (0, 1, 2):
            out[f"P@r<={r}"] = curve["precision"][r]
            out[f"R@r<={r}"] = curve["recall"][r]
        out["radius_curve"] = curve
        out.update(M.matched_distance_gap(dist, rel))
    return out


def _directions(query: ItemSet, database: ItemSet, same_split: bool, within: bool):
    yield "i2t", query.images, database.texts, False
    yield "t2i", query.texts, database.images, False
    if within:
        yield "i2i", query.images, database.images if not same_split else query.images, same_split
        yield "t2t", query.texts, database.texts if not same_split else query.texts, same_split


def _exclude_self(dist: np.ndarray, rel: np.ndarray, exclude: bool):
    """Same-split within-modality search: a query never retrieves itself."""
    if exclude:
        dist = dist.astype(np.float64, copy=True)
        np.fill_diagonal(dist, np.inf)
        rel = rel.copy()
        np.fill_diagonal(rel, False)
    return dist, rel


def evaluate(quantize, query: ItemSet, database: ItemSet | None, cfg: EvalConfig,
             fit: BaselineData | None = None) -> dict:
    """Evaluate ``quantize(relaxed, nbits) -> packed codes`` (the model's quantizer).

    ``database=None`` is the query split's other modality (Flickr8k's protocol).
    ``fit``: the splits the baselines are fitted on. Without one (a dataset with no
    train split) LSH and ITQ are fitted on the evaluated items' floats, CCA+ITQ is left
    out, and the report says so.
    """
    same_split = database is None
    database = database or query
    if not same_split:
        check_no_leak(query, database)
    mode = cfg.relevance
    has_labels = query.images.labels is not None and query.images.labels.any()
    if mode == "auto":
        mode = "labels" if has_labels else "pairs"
    if mode == "labels" and not has_labels:
        raise InvalidInput("relevance 'labels' asked for, but the dataset has no labels")
    if mode == "pairs" and not same_split:
        raise InvalidInput("pair-based relevance needs the database to be the query split itself "
                         "(a caption's own image is its positive); use labels with --database")

    report: dict = {"protocol": {"relevance": mode, "query_splits": query.splits,
                                 "database_splits": query.splits if same_split else database.splits,
                                 "queries": {"images": len(query.images), "texts": len(query.texts)},
                                 "database": {"images": len(database.images), "texts": len(database.texts)},
                                 "bits": list(cfg.bits), "seed": cfg.seed,
                                 "tie_order": "equal Hamming distances keep database order (stable sort)"},
                    "results": {}, "baselines": {}, "code_health": {}}
    dirs = list(_directions(query, database, same_split, cfg.within))
    rels = {}
    for name, q, d, excl in dirs:
        rel, gains = _relevance(q, d, mode)
        rels[name] = (rel, gains if mode == "labels" else None, excl)

    # ---- learned codes -----------------------------------------------------------------
    for nbits in progress(cfg.bits, desc="evaluate codes", unit="length"):
        codes = {}
        for name, q, d, excl in dirs:
            cq = codes.setdefault(id(q), quantize(q.relaxed, nbits))
            cd = codes.setdefault(id(d), quantize(d.relaxed, nbits))
            rel, gains, _ = rels[name]
            hamming = hamming_distances(cq, cd)
            dist, rel = _exclude_self(hamming, rel, excl)
            report["results"].setdefault(name, {})[str(nbits)] = direction_metrics(dist, rel, cfg, nbits, gains)
            candidates = default_candidates(nbits) if cfg.rerank is None else cfg.rerank
            if candidates:
                report.setdefault("served", {}).setdefault(name, {})[str(nbits)] = served_metrics(
                    hamming, q.relaxed, d.relaxed, rel, gains, excl, nbits, candidates, cfg)
        report["code_health"][str(nbits)] = {
            "query_images": M.code_health(codes[id(query.images)], nbits),
            "query_texts": M.code_health(codes[id(query.texts)], nbits)}
        report.setdefault("score", {})[str(nbits)] = selection_score(
            {d: report["results"][d][str(nbits)] for d in ("i2t", "t2i")}, mode, cfg.recall_ks)

    if not cfg.baselines:
        return report
    # ---- baselines ---------------------------------------------------------------------
    base = report["baselines"]
    for name, q, d, excl in dirs:
        rel, gains, _ = rels[name]
        dist, rel = _exclude_self(cosine_distances(q.relaxed, d.relaxed), rel, excl)
        base.setdefault("float", {})[name] = direction_metrics(dist, rel, cfg, None, gains)
    if fit is not None:
        floats = np.concatenate([fit.train.images.relaxed, fit.train.texts.relaxed])
        report["protocol"]["baselines_fitted_on"] = fit.train.splits
    else:
        floats = np.concatenate([query.images.relaxed, query.texts.relaxed] +
                                ([] if same_split else [database.images.relaxed, database.texts.relaxed]))
        report["protocol"]["baselines_fitted_on"] = "the evaluated items (the dataset has no train split)"
    cca = _cca_chosen_on_dev(fit, cfg, mode, report) if fit is not None and _has_raw(query, database) else None
    for nbits in progress(cfg.bits, desc="baselines", unit="length"):
        encoders = {"lsh": LSH(floats.shape[1], nbits, cfg.seed).fit(floats),
                    "itq": ITQ(nbits, seed=cfg.seed).fit(floats)}
        for bname, enc in encoders.items():
            for name, q, d, excl in dirs:
                rel, gains, _ = rels[name]
                dist, rel = _exclude_self(hamming_distances(enc.encode(q.relaxed), enc.encode(d.relaxed)), rel, excl)
                base.setdefault(bname, {}).setdefault(name, {})[str(nbits)] = _short(
                    direction_metrics(dist, rel, cfg, nbits, gains))
        if cca is not None:
            model, projections = cca
            images, rows, texts = _pairs(fit.train)
            cca_itq = CCAITQ(model, projections, nbits, seed=cfg.seed).fit(images, texts, rows)
            for name, q, d, excl in dirs:
                fq = cca_itq.encode_images if name[0] == "i" else cca_itq.encode_texts
                fd = cca_itq.encode_images if name[2] == "i" else cca_itq.encode_texts
                rel, gains, _ = rels[name]
                dist, rel = _exclude_self(hamming_distances(fq(q.raw), fd(d.raw)), rel, excl)
                base.setdefault("cca_itq", {}).setdefault(name, {})[str(nbits)] = _short(
                    direction_metrics(dist, rel, cfg, nbits, gains))
    return report


def served_metrics(hamming: np.ndarray, query_floats: np.ndarray, database_floats: np.ndarray, rel: np.ndarray,
                   gains: np.ndarray | None, exclude_self: bool, nbits: int, candidates: int,
                   cfg: EvalConfig) -> dict:
    """The metrics of what a two-stage search serves: the ``candidates`` nearest codes
    re-ranked by cosine of the database's stored (compressed) outputs, then the rest in
    Hamming order; with the storage's bytes per item (codes + re-rank store + id)."""
    from .rerank import bytes_per_item, compress, ranking_distances, served_ranking

    vectors, scales = compress(database_floats, cfg.rerank_dtype)
    ranking = served_ranking(hamming, query_floats, vectors, scales, candidates)
    if exclude_self:  # within one split a query never retrieves itself: drop it wherever it ranked
        ranking = np.stack([row[row != i] for i, row in enumerate(ranking)])
        rel = np.take_along_axis(rel, ranking, axis=1)
        gains = None if gains is None else np.take_along_axis(gains, ranking, axis=1)
        ranking = np.broadcast_to(np.arange(ranking.shape[1]), ranking.shape)
    dist = ranking_distances(np.ascontiguousarray(ranking))
    out = _short(direction_metrics(dist, rel, cfg, None, gains))
    out["mAP_tie_aware"] = out["mAP"]  # the served order has no ties
    out["rerank"], out["rerank_dtype"] = candidates, cfg.rerank_dtype
    out["bytes_per_item"] = bytes_per_item(nbits, vectors.shape[1], cfg.rerank_dtype)
    return out


def selection_score(by_direction: dict[str, dict], relevance: str, ks=(1, 5, 10)) -> float:
    """The number training picks its best epoch by (``retrieval.evaluation.ValidationEvaluator``),
    from a report's metrics: the mean over image→text and text→image of R@1/5/10 with
    pair relevance, of mAP with labels. A report carries it so the choice can be checked."""
    if relevance == "labels":
        return float(np.mean([by_direction[d]["mAP"] for d in ("i2t", "t2i")]))
    return float(np.mean([by_direction[d][f"R@{k}"] for d in ("i2t", "t2i") for k in ks]))


def _has_raw(query: ItemSet, database: ItemSet) -> bool:
    return all(s.raw is not None for s in (query.images, query.texts, database.images, database.texts))


def _pairs(items: ItemSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (image, caption) pair's backbone features: (image features, each caption's
    image row, caption features); an image is stored once however many captions it has."""
    row = {item: i for i, item in enumerate(items.images.item_ids)}
    return items.images.raw, np.array([row[item] for item in items.texts.item_ids], dtype=np.int64), items.texts.raw


def _cca_chosen_on_dev(fit: BaselineData, cfg: EvalConfig, mode: str, report: dict):
    """CCA fitted on the training pairs, its ridge the one of :data:`CCA_RIDGES` whose
    longest codes score best on dev (mean R@10, or mAP with labels, over both directions);
    without a dev split, the smallest. Returns (CCA, projections); records the choice."""
    if fit.train.images.raw is None or fit.train.texts.raw is None:
        return None
    x, rows, y = _pairs(fit.train)
    model = CCA(x, y, rows)
    dev = fit.dev
    if dev is None or dev.images.raw is None or dev.texts.raw is None:
        report["protocol"]["cca_itq_ridge"] = {"chosen": CCA_RIDGES[0], "on": "no dev split: the smallest ridge"}
        return model, model.solve(CCA_RIDGES[0])
    nbits, key = max(cfg.bits), ("mAP" if mode == "labels" else "R@10")
    dev_scores, solved = {}, {}
    for reg in CCA_RIDGES:
        solved[reg] = projections = model.solve(reg)
        enc = CCAITQ(model, projections, nbits, seed=cfg.seed).fit(x, y, rows)
        images, texts = enc.encode_images(dev.images.raw), enc.encode_texts(dev.texts.raw)
        scores = []
        for q, d, cq, cd in ((dev.images, dev.texts, images, texts), (dev.texts, dev.images, texts, images)):
            rel, _ = _relevance(q, d, mode)
            ranking = M.rank_by_distance(hamming_distances(cq, cd))
            scores.append(M.recall_at_k(ranking, rel, (10,))["R@10"] if key == "R@10"
                          else M.mean_average_precision(ranking, rel)["mAP"])
        dev_scores[reg] = float(np.mean(scores))
    chosen = max(CCA_RIDGES, key=lambda r: (dev_scores[r], -r))
    report["protocol"]["cca_itq_ridge"] = {"chosen": chosen, "on": f"{dev.splits} {key} at {nbits} bits",
                                            "dev_scores": {str(r): v for r, v in dev_scores.items()}}
    return model, solved[chosen]


def _short(m: dict) -> dict:
    """Baselines keep the headline numbers, not the full radius curve."""
    return {k: v for k, v in m.items() if k != "radius_curve"}
