"""Bit packing and Hamming distances.

Bits are packed with numpy's ``packbits`` (big-endian within a byte), one row of K/8
bytes per item: the layout faiss binary indexes expect. A bit is 1 where the relaxed
output is >= 0, so a code never takes a third value.
"""
from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def binarize(relaxed: np.ndarray) -> np.ndarray:
    """Relaxed outputs (any real values) -> boolean bits, 1 where value >= 0."""
    return np.asarray(relaxed) >= 0


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Boolean [N, K] -> packed uint8 [N, K/8] (big-endian within each byte)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise ValueError(f"bits must be [N, K] with K a multiple of 8, got shape {bits.shape}")
    return np.packbits(bits, axis=1)


def sign_codes(relaxed: np.ndarray, nbits: int) -> np.ndarray:
    """Packed sign codes of the first ``nbits`` outputs: what validation scores (whatever
    the model's quantiser, which may not be fitted yet) and what the ``sign`` quantiser gives."""
    relaxed = np.asarray(relaxed)
    if relaxed.shape[1] < nbits:
        raise ValueError(f"{nbits}-bit codes need at least {nbits} outputs per row, got {relaxed.shape[1]}")
    return pack_bits(binarize(relaxed[:, :nbits]))


def unpack_bits(codes: np.ndarray, nbits: int | None = None) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint8)
    bits = np.unpackbits(codes, axis=1).astype(bool)
    return bits if nbits is None else bits[:, :nbits]


def hamming_distances(queries: np.ndarray, database: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """All-pairs Hamming distances between packed codes: [Q, B] int32 (exact)."""
    queries = np.asarray(queries, dtype=np.uint8)
    database = np.asarray(database, dtype=np.uint8)
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"code lengths differ: {queries.shape[1] * 8} vs {database.shape[1] * 8} bits")
    out = np.empty((len(queries), len(database)), dtype=np.int32)
    for s in range(0, len(queries), chunk):
        x = np.bitwise_xor(queries[s:s + chunk, None, :], database[None, :, :])
        out[s:s + chunk] = _POPCOUNT[x].sum(axis=2, dtype=np.int32)
    return out
