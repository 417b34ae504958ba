"""Baselines on the same data and backbone features, so a report shows what hashing
costs and what learning to hash gains.

* float ceiling: the model's continuous (pre-sign) outputs ranked by cosine similarity;
* LSH: sign of seeded Gaussian random projections of those float outputs;
* ITQ: PCA + iterative quantization (faiss) of those float outputs;
* CCA+ITQ: the classical cross-modal hashing baseline on the *raw backbone features*:
  canonical correlation analysis fitted on training pairs, then ITQ.

Every baseline is fitted only on training data or, for the post-hoc binarisers (LSH,
ITQ), on the float outputs they binarise; both modalities share one projection so
their codes live in one Hamming space.
"""
from __future__ import annotations

import numpy as np

from crossmodal.codes import pack_bits


def cosine_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """1 - cosine similarity: a distance for the same ranking functions as Hamming."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ d.T


class LSH:
    def __init__(self, dim: int, nbits: int, seed: int = 0):
        self.proj = np.random.default_rng(seed).normal(size=(dim, nbits)).astype(np.float32)

    def fit(self, x: np.ndarray) -> "LSH":
        self.mean = x.mean(0)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        return pack_bits(((x - self.mean) @ self.proj) >= 0)


class ITQ:
    """PCA to ``nbits`` dimensions, then faiss' ITQ rotation."""

    def __init__(self, nbits: int, iterations: int = 50, seed: int = 0):
        self.nbits, self.iterations, self.seed = nbits, iterations, seed

    def fit(self, x: np.ndarray) -> "ITQ":
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        self.mean = x.mean(0)
        xc = x - self.mean
        _, _, vt = np.linalg.svd(xc[:: max(1, len(xc) // 20000)], full_matrices=False)
        k = min(self.nbits, vt.shape[0])  # bounded by the dimensions and by the rows (a small split)
        self.pca = vt[:k].T
        if k < self.nbits:  # more bits than dimensions: pad with random directions
            extra = np.random.default_rng(self.seed).normal(size=(x.shape[1], self.nbits - k)).astype(np.float32)
            self.pca = np.concatenate([self.pca, extra], axis=1)
        z = np.ascontiguousarray(xc @ self.pca, dtype=np.float32)
        itq = faiss.ITQMatrix(self.nbits)
        itq.max_iter, itq.seed = self.iterations, self.seed
        itq.train(z)
        self.rotation = faiss.vector_to_array(itq.A).reshape(self.nbits, self.nbits).T
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.pca) @ self.rotation

    def encode(self, x: np.ndarray) -> np.ndarray:
        return pack_bits(self.project(x) >= 0)


class CCA:
    """Regularised CCA in numpy: projections of two views into ``dim`` maximally
    correlated directions (Hotelling; ridge ``reg`` for stability)."""

    def __init__(self, dim: int, reg: float = 1e-3):
        self.dim, self.reg = dim, reg

    def fit(self, x: np.ndarray, y: np.ndarray) -> "CCA":
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.mx, self.my = x.mean(0), y.mean(0)
        xc, yc = x - self.mx, y - self.my
        n = len(x) - 1
        cxx = xc.T @ xc / n + self.reg * np.eye(x.shape[1]) * np.trace(xc.T @ xc / n) / x.shape[1]
        cyy = yc.T @ yc / n + self.reg * np.eye(y.shape[1]) * np.trace(yc.T @ yc / n) / y.shape[1]
        cxy = xc.T @ yc / n
        wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
        u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = min(self.dim, len(s))
        # weight directions by their canonical correlation, as CCA-ITQ (Gong et al.) does
        self.px = (wx @ u[:, :k]) * s[:k]
        self.py = (wy @ vt[:k].T) * s[:k]
        return self

    def transform_x(self, x):
        return ((x - self.mx) @ self.px).astype(np.float32)

    def transform_y(self, y):
        return ((y - self.my) @ self.py).astype(np.float32)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


class CCAITQ:
    """CCA on raw image/text backbone features of training pairs, then ITQ on the
    concatenated projections of both modalities."""

    def __init__(self, nbits: int, seed: int = 0):
        self.nbits, self.seed = nbits, seed

    def fit(self, image_features: np.ndarray, text_features: np.ndarray) -> "CCAITQ":
        self.cca = CCA(self.nbits).fit(image_features, text_features)
        z = np.concatenate([self.cca.transform_x(image_features), self.cca.transform_y(text_features)])
        self.itq = ITQ(self.nbits, seed=self.seed).fit(z)
        return self

    def encode_images(self, x):
        return self.itq.encode(self.cca.transform_x(x))

    def encode_texts(self, y):
        return self.itq.encode(self.cca.transform_y(y))
