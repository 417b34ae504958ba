"""Baselines on the same data and backbone features, so a report shows what hashing
costs and what learning to hash gains.

* float ceiling: the model's continuous (pre-sign) outputs ranked by cosine similarity;
* LSH of our floats: sign of seeded Gaussian random projections of those float outputs,
  a post-hoc quantiser of crossmodal's own outputs (not a cross-modal method);
* ITQ of our floats: PCA + iterative quantization of the same outputs, also post-hoc;
* CCA+ITQ: the classical cross-modal hashing baseline on the *raw backbone features*:
  canonical correlation analysis fitted on training pairs, its ridge chosen on dev, then ITQ.

Every baseline is fitted on the training split (the evaluation falls back to the
evaluated items only when a dataset has none, and says so); both modalities share one
projection so their codes live in one Hamming space.
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
    """PCA to ``nbits`` dimensions, then the ITQ rotation (``crossmodal.quantizers.itq_rotation``)."""

    def __init__(self, nbits: int, iterations: int = 50, seed: int = 0):
        self.nbits, self.iterations, self.seed = nbits, iterations, seed

    def fit(self, x: np.ndarray) -> "ITQ":
        from crossmodal.quantizers import itq_rotation

        x = np.ascontiguousarray(x, dtype=np.float32)
        self.mean = x.mean(0)
        xc = x - self.mean
        _, _, vt = np.linalg.svd(xc[:: max(1, len(xc) // 20000)], full_matrices=False)
        k = min(self.nbits, vt.shape[0])  # bounded by the dimensions and by the rows (a small split)
        self.pca = vt[:k].T
        if k < self.nbits:  # more bits than dimensions: pad with random directions
            extra = np.random.default_rng(self.seed).normal(size=(x.shape[1], self.nbits - k)).astype(np.float32)
            self.pca = np.concatenate([self.pca, extra], axis=1)
        self.rotation = itq_rotation(xc @ self.pca, self.iterations, self.seed)
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.pca) @ self.rotation

    def encode(self, x: np.ndarray) -> np.ndarray:
        return pack_bits(self.project(x) >= 0)


class CCA:
    """Regularised CCA in numpy: projections of two views into their most correlated
    directions (Hotelling), weighted by their canonical correlation as CCA-ITQ (Gong et
    al.) does.

    The covariances and their eigendecompositions are computed once, so trying several
    ridges (``solve(reg)``, the ridge as a fraction of the mean variance) costs a few
    matrix products each: the evaluation picks the ridge on dev."""

    def __init__(self, x: np.ndarray, y: np.ndarray, x_rows: np.ndarray | None = None, chunk: int = 2048):
        """Pairs (``x[x_rows[i]]``, ``y[i]``); ``x_rows`` lets an image with five captions be
        stored once. The covariances accumulate in float64 over chunks of pairs, so memory
        stays at the features plus one chunk (a whole float64 copy of 30,000 pairs of
        3,840-d image features would be 0.9 GB)."""
        x_rows = np.arange(len(y)) if x_rows is None else np.asarray(x_rows)
        n = len(y)
        self.mx = np.bincount(x_rows, minlength=len(x)).astype(np.float64) @ x / n
        self.my = y.mean(0, dtype=np.float64)
        cxx = np.zeros((x.shape[1], x.shape[1]))
        cyy = np.zeros((y.shape[1], y.shape[1]))
        cxy = np.zeros((x.shape[1], y.shape[1]))
        for s in range(0, n, chunk):
            xc = x[x_rows[s:s + chunk]].astype(np.float64) - self.mx
            yc = y[s:s + chunk].astype(np.float64) - self.my
            cxx += xc.T @ xc
            cyy += yc.T @ yc
            cxy += xc.T @ yc
        from scipy.linalg import eigh

        cxx /= n - 1
        cyy /= n - 1
        # in place: a 3,840-d covariance is 118 MB, numpy's eigh would copy it and add 2x that in workspace
        self._eig_x = eigh(cxx, overwrite_a=True, check_finite=False, driver="evr")
        self._eig_y = eigh(cyy, overwrite_a=True, check_finite=False, driver="evr")
        self._cxy = cxy / (n - 1)

    def solve(self, reg: float) -> tuple[np.ndarray, np.ndarray]:
        """Projections (image [Dx, k], text [Dy, k]) for ridge ``reg``, strongest first."""
        wx, wy = _inv_sqrt(*self._eig_x, reg), _inv_sqrt(*self._eig_y, reg)
        u, s, vt = np.linalg.svd(wx @ self._cxy @ wy, full_matrices=False)
        return (wx @ u) * s, (wy @ vt.T) * s


def _inv_sqrt(w: np.ndarray, v: np.ndarray, reg: float) -> np.ndarray:
    """(C + reg * mean(eig C) * I)^(-1/2) from C's eigendecomposition."""
    w = w + reg * max(float(w.mean()), 1e-12)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


class CCAITQ:
    """The first ``nbits`` CCA directions of both modalities, then ITQ on the
    concatenated projections of the training pairs."""

    def __init__(self, cca: CCA, projections: tuple[np.ndarray, np.ndarray], nbits: int, seed: int = 0):
        self.cca, self.nbits, self.seed = cca, nbits, seed
        self.px, self.py = projections[0][:, :nbits], projections[1][:, :nbits]

    def fit(self, image_features: np.ndarray, text_features: np.ndarray, image_rows: np.ndarray | None = None
            ) -> "CCAITQ":
        """ITQ on the projections of the pairs (``image_features[image_rows[i]]``, ``text_features[i]``)."""
        images = self.project_images(image_features)
        z = np.concatenate([images if image_rows is None else images[image_rows], self.project_texts(text_features)])
        self.itq = ITQ(self.nbits, seed=self.seed).fit(z)
        return self

    def project_images(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.cca.mx) @ self.px).astype(np.float32)

    def project_texts(self, y: np.ndarray) -> np.ndarray:
        return ((y - self.cca.my) @ self.py).astype(np.float32)

    def encode_images(self, x):
        return self.itq.encode(self.project_images(x))

    def encode_texts(self, y):
        return self.itq.encode(self.project_texts(y))
