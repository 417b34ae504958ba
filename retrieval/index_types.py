"""Index types and their parameters: the vocabulary every backend (faiss, Milvus) and
the command line share, in a leaf module so none of them imports another for it."""
from __future__ import annotations

from crossmodal.errors import InvalidInput

INDEX_TYPES = ("flat", "ivf", "hnsw", "multihash")
DEFAULT_PARAMS = {"flat": {}, "ivf": {"nlist": 1024, "nprobe": 16}, "hnsw": {"M": 32, "efSearch": 128,
                                                                             "efConstruction": 80},
                  "multihash": {"nhash": 4, "b": 16, "nflip": 2}}


def index_params(kind: str, params: dict | None, backend: str = "") -> dict:
    """``params`` over the defaults of index type ``kind``; a parameter the type does
    not take is refused (the same check for every backend)."""
    merged = {**DEFAULT_PARAMS[kind], **(params or {})}
    unknown = set(merged) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise InvalidInput(f"index type {kind!r}{' on ' + backend if backend else ''} has no parameter(s) "
                           f"{sorted(unknown)}; it takes {sorted(DEFAULT_PARAMS[kind]) or 'none'}")
    return merged
