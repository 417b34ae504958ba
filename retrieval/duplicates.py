"""Near-duplicate photos: a range query over the codes the index already holds, each
pair confirmed by the cosine of the stored outputs.

Copies of one photo (the same file twice, a re-saved JPEG, a resized copy) get codes a
few bits apart, but so can two different photos of one kind of scene: the Hamming radius
finds candidates cheaply, and the item's stored outputs (what the second stage of every
search re-ranks by) confirm them, at a cosine far above what two different photos reach.
Confirmed pairs are joined into groups (union-find), largest first. The defaults are
chosen on planted copies among real photos (``benchmarks/bench_duplicates.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossmodal.errors import InvalidInput

from .rerank import unit_rows

#: Hamming radius of the candidate search, by code length (about 1 bit in 6: see module doc)
DEFAULT_RADIUS = {16: 2, 32: 5, 64: 10, 128: 20}
#: cosine of the stored outputs a candidate pair needs to count as one photo
DEFAULT_MIN_COSINE = 0.95


def default_radius(nbits: int) -> int:
    return DEFAULT_RADIUS.get(nbits, max(1, nbits // 6))


@dataclass
class DuplicateGroup:
    """Items that are copies of one another: ids, keys (photo paths) and, per item, the
    Hamming distance and cosine to the group's first item."""
    ids: list[int]
    keys: list[str]
    distances: list[int] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"size": len(self.ids), "ids": [str(i) for i in self.ids], "keys": self.keys,
                "distances": self.distances, "cosines": [round(c, 4) for c in self.cosines]}


class _Groups:
    """Union-find over positions."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicates(index, modality: str = "image", radius: int | None = None,
                    min_cosine: float | None = DEFAULT_MIN_COSINE, batch: int = 4096) -> list[DuplicateGroup]:
    """Groups of near-duplicate items of ``modality`` in ``index``: pairs within ``radius``
    bits (default: by code length), confirmed by a cosine of stored outputs of at least
    ``min_cosine`` (None: codes alone, also for an index that keeps no outputs). Largest
    groups first, then by their first key; within a group, items in index order."""
    if radius is None:
        radius = default_radius(index.nbits)
    if radius < 0:
        raise InvalidInput(f"--radius is a number of bits >= 0, not {radius}")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise InvalidInput(f"--min-cosine is a cosine, from -1 to 1, not {min_cosine}")
    if modality not in index.indexes or index.count(modality) < 2:
        return []
    store = index.rerank_stores.get(modality) if min_cosine is not None else None
    if min_cosine is not None and store is None:
        raise InvalidInput("this index keeps no outputs to confirm duplicates with (built with --rerank-store none): "
                           "pass --min-cosine none to group by codes alone")
    be = index.indexes[modality]
    ids, codes = be.codes_of_all()
    position = {int(i): p for p, i in enumerate(ids)}
    groups = _Groups(len(ids))
    if store is not None:
        vectors, scales, found = store.lookup(ids)
        units = unit_rows(vectors * scales[:, None])
    for start in range(0, len(ids), batch):
        for q, (dist, found_ids) in enumerate(be.range_search(codes[start:start + batch], radius)):
            a = start + q
            others = np.array([position[int(i)] for i in found_ids if position.get(int(i), a) > a], dtype=np.int64)
            if not len(others):
                continue
            if store is not None:
                ok = found[others] & found[a] & ((units[others] @ units[a]) >= min_cosine)
                others = others[ok]
            for b in others:
                groups.join(a, int(b))
    members: dict[int, list[int]] = {}
    for p in range(len(ids)):
        members.setdefault(groups.find(p), []).append(p)
    meta = index.metadata.get([int(ids[p]) for ps in members.values() if len(ps) > 1 for p in ps])
    out = []
    for ps in members.values():
        if len(ps) < 2:
            continue
        first = ps[0]
        dists = [int(np.unpackbits(codes[first] ^ codes[p]).sum()) for p in ps]
        cos = [float(units[first] @ units[p]) for p in ps] if store is not None else []
        out.append(DuplicateGroup([int(ids[p]) for p in ps], [meta[int(ids[p])]["key"] for p in ps], dists, cos))
    out.sort(key=lambda g: (-len(g.ids), g.keys[0]))
    return out
