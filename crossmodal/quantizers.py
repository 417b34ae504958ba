"""Turning relaxed outputs into bits.

``sign`` is the default: bit = output >= 0. ``itq`` (iterative quantization, Gong &
Lazebnik 2011) learns one orthogonal rotation per code length that lowers the loss of
binarising; ``kmeans`` learns a threshold per dimension as the midpoint of a 1-D
2-means split. Both are fitted on training outputs of *both* modalities together (one
shared Hamming space needs one shared rule) and are saved with the model as tensors.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import InvalidInput


def itq_rotation(v: np.ndarray, iterations: int = 50, seed: int = 0) -> np.ndarray:
    """Iterative quantization (Gong & Lazebnik 2011): the orthogonal ``R`` [d, d] that
    lowers ``||sign(V R) - V R||`` for centred rows ``v`` [n, d], from a seeded random
    rotation, alternating ``B = sign(V R)`` and the orthogonal Procrustes step
    ``R = U W^T`` from the SVD ``V^T B = U S W^T``.

    Written here rather than taken from faiss: ``faiss.ITQMatrix`` (1.12 to 1.15) leaves
    the quantisation loss where its random start put it (on points of a rotated
    hypercube, where this finds the rotation, it stays at a random rotation's loss;
    ``tests/test_heads_quantizers.py``)."""
    v = np.asarray(v, dtype=np.float64)
    d = v.shape[1]
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    for _ in range(iterations):
        u, _, wt = np.linalg.svd(v.T @ np.where(v @ rotation >= 0, 1.0, -1.0))
        rotation = u @ wt
    return rotation.astype(np.float32)


class Quantizer(nn.Module):
    """Base: maps relaxed [N, >=K] outputs to boolean bits [N, K]."""

    kind = "sign"
    needs_fit = False

    def __init__(self, bits: tuple[int, ...]):
        super().__init__()
        self.bits = tuple(bits)

    def fit(self, relaxed: np.ndarray) -> None:  # noqa: D401
        """Sign needs no fitting."""

    def project(self, relaxed: torch.Tensor, nbits: int) -> torch.Tensor:
        """The real values whose sign gives the bits (for ranking ties, re-ranking)."""
        return relaxed[:, :nbits]

    def forward(self, relaxed: torch.Tensor, nbits: int) -> torch.Tensor:
        if nbits not in self.bits:
            raise InvalidInput(f"this model serves code lengths {list(self.bits)}, not {nbits}")
        return self.project(relaxed, nbits) >= 0


class SignQuantizer(Quantizer):
    pass


class ITQQuantizer(Quantizer):
    kind = "itq"
    needs_fit = True

    def __init__(self, bits: tuple[int, ...]):
        super().__init__(bits)
        for b in self.bits:
            self.register_buffer(f"rotation_{b}", torch.eye(b))
            self.register_buffer(f"mean_{b}", torch.zeros(b))

    def fit(self, relaxed: np.ndarray, iterations: int = 50, seed: int = 0) -> None:
        for b in self.bits:
            x = np.ascontiguousarray(relaxed[:, :b], dtype=np.float32)
            mean = x.mean(0)
            getattr(self, f"rotation_{b}").copy_(torch.from_numpy(itq_rotation(x - mean, iterations, seed)))
            getattr(self, f"mean_{b}").copy_(torch.from_numpy(mean))

    def project(self, relaxed: torch.Tensor, nbits: int) -> torch.Tensor:
        x = relaxed[:, :nbits] - getattr(self, f"mean_{nbits}")
        return x @ getattr(self, f"rotation_{nbits}")


class KMeansQuantizer(Quantizer):
    kind = "kmeans"
    needs_fit = True

    def __init__(self, bits: tuple[int, ...]):
        super().__init__(bits)
        self.register_buffer("thresholds", torch.zeros(max(self.bits)))

    def fit(self, relaxed: np.ndarray, iterations: int = 30) -> None:
        x = np.asarray(relaxed[:, :len(self.thresholds)], dtype=np.float64)
        lo, hi = x.min(0), x.max(0)
        for _ in range(iterations):  # 1-D 2-means per dimension, vectorised over dimensions
            t = (lo + hi) / 2
            below = x < t
            n_lo = below.sum(0)
            n_hi = len(x) - n_lo
            lo = np.where(n_lo > 0, (x * below).sum(0) / np.maximum(n_lo, 1), lo)
            hi = np.where(n_hi > 0, (x * ~below).sum(0) / np.maximum(n_hi, 1), hi)
        self.thresholds.copy_(torch.from_numpy(((lo + hi) / 2).astype(np.float32)))

    def project(self, relaxed: torch.Tensor, nbits: int) -> torch.Tensor:
        return relaxed[:, :nbits] - self.thresholds[:nbits]


QUANTIZERS = {"sign": SignQuantizer, "itq": ITQQuantizer, "kmeans": KMeansQuantizer}


def create_quantizer(kind: str, bits: tuple[int, ...]) -> Quantizer:
    if kind not in QUANTIZERS:
        raise InvalidInput(f"unknown quantizer {kind!r}; choose one of {sorted(QUANTIZERS)}")
    return QUANTIZERS[kind](bits)
