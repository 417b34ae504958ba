"""Near-duplicate photos: a range query over the codes the index already holds, each
pair confirmed by the photos' looks.

Copies of one photo (the same file twice, a re-saved JPEG, a resized copy) get codes a
few bits apart, but so can two different photos of one kind of scene: the model's codes
and outputs say what a photo shows, and three basketball players in white at one arena
show the same thing. So the Hamming radius finds candidates cheaply, and each photo's
look confirms them: a 64-bit difference hash of its grey thumbnail kept at ingest
(``extra["look"]``, :func:`crossmodal.data.images.look_hash`), which copies keep within a
few bits and different photos do not. Confirmed pairs are joined into groups
(union-find), largest first.

The defaults are chosen on planted copies among real photos (``benchmarks/bench_duplicates.py``,
result files ``duplicates-*``): codes and outputs alone reached a pair precision of 0.92 at
best; with the look check 0.995, finding every exact, re-encoded and 75 % copy. A
cosine check on the stored outputs is available (``min_cosine``) and off by default: on
the benchmark it removed no false pair and cost recall on halved copies. A pair with a
photo indexed before looks were kept needs outputs at ``LOOKLESS_MIN_COSINE`` instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossmodal.errors import InvalidInput

from .rerank import unit_rows

#: Hamming radius of the candidate search, by code length: 14 of 64 bits chosen on planted
#: copies among Flickr8k train photos (``benchmarks/bench_duplicates.py``, result file
#: ``duplicates-*``); the other lengths keep the same share of the code
DEFAULT_RADIUS = {16: 4, 32: 7, 64: 14, 128: 28}
#: what a pair of which a photo has no look (indexed by an earlier release) needs instead:
#: outputs this close (pair precision 0.92 on the benchmark, where looks give 0.995)
LOOKLESS_MIN_COSINE = 0.97
#: cosine of the stored outputs a candidate pair needs; None: not checked (chosen with the radius)
DEFAULT_MIN_COSINE: float | None = None
#: bits of the two photos' 64-bit look hashes that may differ (chosen with the radius)
DEFAULT_MAX_LOOK_DISTANCE = 8


def default_radius(nbits: int) -> int:
    return DEFAULT_RADIUS.get(nbits, max(1, round(nbits * 14 / 64)))


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
                    min_cosine: float | None = DEFAULT_MIN_COSINE,
                    max_look_distance: int | None = DEFAULT_MAX_LOOK_DISTANCE, batch: int = 4096
                    ) -> list[DuplicateGroup]:
    """Groups of near-duplicate items of ``modality`` in ``index``: pairs within ``radius``
    bits (default: by code length), confirmed by a cosine of stored outputs of at least
    ``min_cosine`` (None: not by outputs, also for an index that keeps none) and by looks
    at most ``max_look_distance`` bits apart where both items have one (None: not by
    looks). Largest groups first, then by their first key; within a group, items in
    index order."""
    if radius is None:
        radius = default_radius(index.nbits)
    if radius < 0:
        raise InvalidInput(f"--radius is a number of bits >= 0, not {radius}")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise InvalidInput(f"--min-cosine is a cosine, from -1 to 1, not {min_cosine}")
    if modality not in index.indexes or index.count(modality) < 2:
        return []
    looks = None
    if max_look_distance is not None:
        by_id = {m["id"]: m["extra"].get("look") for m in index.items_of(modality)}
    be = index.indexes[modality]
    ids, codes = be.codes_of_all()
    if max_look_distance is not None:
        has_look = np.array([bool(by_id.get(int(i))) for i in ids], dtype=bool)
        looks = np.array([int(by_id[int(i)], 16) if has_look[n] else 0 for n, i in enumerate(ids)], dtype=np.uint64)
    lookless = looks is not None and not has_look.all()  # photos indexed before looks were kept
    store = index.rerank_stores.get(modality) if (min_cosine is not None or lookless) else None
    if min_cosine is not None and store is None:
        raise InvalidInput("this index keeps no outputs to confirm duplicates with (built with --rerank-store none): "
                           "pass --min-cosine none to confirm by looks alone")
    if store is not None:
        vectors, scales, found = store.lookup(ids)
        units = unit_rows(vectors * scales[:, None])
    position = {int(i): p for p, i in enumerate(ids)}
    groups = _Groups(len(ids))
    for start in range(0, len(ids), batch):
        for q, (dist, found_ids) in enumerate(be.range_search(codes[start:start + batch], radius)):
            a = start + q
            others = np.array([position[int(i)] for i in found_ids if position.get(int(i), a) > a], dtype=np.int64)
            if not len(others):
                continue
            ok = np.ones(len(others), bool)
            cos = (units[others] @ units[a]) if store is not None else None
            if min_cosine is not None:
                ok &= found[others] & found[a] & (cos >= min_cosine)
            if looks is not None:
                both = has_look[others] & has_look[a]
                apart = np.unpackbits((looks[others] ^ looks[a]).view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
                # a pair without looks is confirmed by its outputs alone, strictly, or not at all
                by_outputs = (found[others] & found[a] & (cos >= LOOKLESS_MIN_COSINE)) if store is not None else False
                ok &= np.where(both, apart <= max_look_distance, by_outputs)
            for b in others[ok]:
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
