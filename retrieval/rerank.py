"""Two-stage search: the Hamming top-N candidates, re-ranked by the cosine of compact
copies of the model's continuous outputs.

A code of K bits keeps the sign of the first K outputs; the outputs themselves (all of
the head's width) rank far better, at the float ceiling, but cost 4 bytes a dimension.
So each indexed item also keeps its outputs, unit-normalised and stored as int8 with one
float32 scale per row (128 + 4 bytes for the default's 128 outputs), and a query re-ranks
its N nearest codes by cosine against them: what faiss' ``IndexRefine`` and Milvus'
refine do. One scale per row rather than per dimension, because an index grows a commit
at a time and has no calibration set to fix per-dimension scales on.

``float16`` (2 bytes a dimension) is the other storage, measured against int8 by
``crossmodal eval --rerank-dtype``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.errors import InvalidInput

RERANK_DTYPES = ("int8", "float16")
#: candidates re-ranked when an index does not say otherwise, by code length: chosen on
#: Flickr8k dev with the bundled model (``benchmarks/bench_rerank.py``, result file
#: ``rerank-dev-*``): the smallest N whose served R@10 is within 0.2 of N=1000's
DEFAULT_CANDIDATES = {16: 500, 32: 500, 64: 100, 128: 50}


def store_bytes_per_item(width: int, dtype: str = "int8") -> int:
    """An item's bytes in the re-rank store: its row, the row's scale, its id."""
    return width * np.dtype(_numpy_dtype(dtype)).itemsize + 4 + 8


def bytes_per_item(nbits: int, width: int, dtype: str = "int8") -> int:
    """What an item of a re-ranking index costs: its code and id in the binary index, and
    its share of the re-rank store."""
    return nbits // 8 + 8 + store_bytes_per_item(width, dtype)


def default_candidates(nbits: int) -> int:
    return DEFAULT_CANDIDATES.get(nbits, 100)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def compress(floats: np.ndarray, dtype: str = "int8") -> tuple[np.ndarray, np.ndarray]:
    """Outputs [n, d] -> (stored vectors [n, d], per-row scales [n]): unit rows, as int8
    scaled so each row's largest component is 127, or as float16 (scale 1)."""
    if dtype not in RERANK_DTYPES:
        raise InvalidInput(f"unknown re-rank storage {dtype!r}; one of {', '.join(RERANK_DTYPES)}")
    unit = unit_rows(floats)
    if dtype == "float16":
        return unit.astype(np.float16), np.ones(len(unit), np.float32)
    scale = np.maximum(np.abs(unit).max(axis=1), 1e-12) / 127.0
    return np.round(unit / scale[:, None]).astype(np.int8), scale.astype(np.float32)


def cosines(query_unit: np.ndarray, vectors: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Cosine of unit query rows [q, d] with stored rows [n, d]: [q, n]."""
    return (query_unit @ vectors.astype(np.float32).T) * scales[None, :]


def by_cosine(query_unit: np.ndarray, vectors: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The second stage, for one query: candidate positions ordered by cosine with the unit
    query row [d], highest first, ties kept in the order given (Hamming order), and the
    cosines. The index's search and the evaluation of served ranking both order by this."""
    scores = cosines(query_unit[None, :], vectors, scales)[0]
    return np.argsort(-scores, kind="stable"), scores


def served_ranking(hamming: np.ndarray, query_floats: np.ndarray, vectors: np.ndarray, scales: np.ndarray,
                   candidates: int) -> np.ndarray:
    """What a two-stage search returns, as a full ranking per query [q, n]: the
    ``candidates`` nearest codes (ties in database order, as the flat index keeps them)
    ordered by cosine, then every other item in Hamming order. For evaluation."""
    order = np.argsort(hamming, axis=1, kind="stable")
    if candidates <= 0:
        return order
    top = order[:, :candidates]
    q = unit_rows(query_floats)
    reordered = np.stack([top[i][by_cosine(q[i], vectors[top[i]], scales[top[i]])[0]] for i in range(len(top))])
    return np.concatenate([reordered, order[:, candidates:]], axis=1)


def ranking_distances(ranking: np.ndarray) -> np.ndarray:
    """Distances that sort into ``ranking`` with no ties (position of each item), for the
    metrics that take distances."""
    dist = np.empty(ranking.shape, dtype=np.float64)
    np.put_along_axis(dist, ranking, np.arange(ranking.shape[1], dtype=np.float64)[None, :], axis=1)
    return dist


class RerankStore:
    """One modality's re-rank vectors in an index: ids sorted ascending, their stored
    vectors and scales; memory-mapped when opened from a version folder. Additions and
    removals since then are kept apart until :meth:`write_into` merges them."""

    FILES = ("ids", "vectors", "scales")

    def __init__(self, dtype: str, ids: np.ndarray | None = None, vectors: np.ndarray | None = None,
                 scales: np.ndarray | None = None):
        if dtype not in RERANK_DTYPES:
            raise InvalidInput(f"unknown re-rank storage {dtype!r}; one of {', '.join(RERANK_DTYPES)}")
        self.dtype = dtype
        self._ids = ids if ids is not None else np.zeros(0, np.int64)
        self._vectors = vectors
        self._scales = scales if scales is not None else np.zeros(0, np.float32)
        self._new: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._removed: set[int] = set()

    def __len__(self) -> int:
        hidden = int(np.isin(self._ids, list(self._removed)).sum()) if self._removed else 0
        return len(self._ids) - hidden + sum(len(i) for i, _, _ in self._new)

    def add(self, ids: np.ndarray, floats: np.ndarray) -> None:
        """Store the outputs of these items (an item stored before is replaced)."""
        ids = np.asarray(ids, dtype=np.int64)
        self.remove(ids)  # the opened rows of these ids, and earlier additions, give way
        vectors, scales = compress(floats, self.dtype)
        self._new.append((ids, vectors, scales))

    def remove(self, ids: Sequence[int]) -> None:
        drop = {int(i) for i in ids}
        self._removed |= drop
        self._new = [(i[keep], v[keep], s[keep]) for i, v, s in self._new
                     for keep in [~np.isin(i, list(drop))]]

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors [m, d] as float32, scales [m], found [m] bool) for ``ids``: rows of
        items without a stored vector are zero and not found."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._new or self._removed:  # searched before a save (a service adding in memory): fold them in
            self._ids, self._vectors, self._scales = self.merged()
            self._new, self._removed = [], set()
        vectors, scales = np.zeros((len(ids), self.width), np.float32), np.zeros(len(ids), np.float32)
        found = np.zeros(len(ids), bool)
        if len(self._ids):
            pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
            hit = self._ids[pos] == ids
            vectors[hit] = self._vectors[pos[hit]].astype(np.float32)
            scales[hit], found[hit] = self._scales[pos[hit]], True
        return vectors, scales, found

    @property
    def width(self) -> int:
        if self._vectors is not None and self._vectors.ndim == 2:
            return self._vectors.shape[1]
        return self._new[0][1].shape[1] if self._new else 0

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live row, sorted by id: (ids, vectors, scales)."""
        parts = []
        if len(self._ids):
            keep = ~np.isin(self._ids, list(self._removed)) if self._removed else np.ones(len(self._ids), bool)
            parts.append((self._ids[keep], np.asarray(self._vectors[keep]), self._scales[keep]))
        parts += [p for p in self._new if len(p[0])]
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, self.width), _numpy_dtype(self.dtype)), np.zeros(0, np.float32)
        ids = np.concatenate([p[0] for p in parts])
        order = np.argsort(ids, kind="stable")
        return ids[order], np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order]

    def write_into(self, folder: Path, modality: str) -> list[str]:
        """Write the merged rows as ``rerank_<modality>.{ids,vectors,scales}.npy``."""
        arrays = dict(zip(self.FILES, self.merged()))
        names = []
        for part, array in arrays.items():
            name = f"rerank_{modality}.{part}.npy"
            np.save(folder / name, np.ascontiguousarray(array), allow_pickle=False)
            names.append(name)
        return names

    @classmethod
    def open(cls, folder: Path, modality: str, dtype: str) -> "RerankStore | None":
        """The store a version folder holds for ``modality`` (memory-mapped), or None."""
        paths = {part: folder / f"rerank_{modality}.{part}.npy" for part in cls.FILES}
        if not all(p.is_file() for p in paths.values()):
            return None
        arrays = {part: np.load(p, mmap_mode="r", allow_pickle=False) for part, p in paths.items()}
        return cls(dtype, np.asarray(arrays["ids"]), arrays["vectors"], np.asarray(arrays["scales"]))

    @classmethod
    def from_legacy_npz(cls, path: Path, dtype: str = "int8") -> "RerankStore":
        """A store from an earlier release's ``rerank_<modality>.npz`` (float16 outputs by id)."""
        with np.load(path, allow_pickle=False) as z:
            ids, floats = z["ids"].astype(np.int64), z["floats"].astype(np.float32)
        store = cls(dtype)
        if len(ids):
            store.add(ids, floats)
        return store

    def bytes_per_item(self) -> float:
        return float(store_bytes_per_item(self.width, self.dtype))


def _numpy_dtype(dtype: str):
    return np.int8 if dtype == "int8" else np.float16
