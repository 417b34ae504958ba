"""Index types and their parameters: the vocabulary every backend (faiss, Milvus) and
the command line share, in a leaf module so none of them imports another for it."""
from __future__ import annotations

from crossmodal.errors import InvalidInput

INDEX_TYPES = ("flat", "ivf", "hnsw", "multihash")
DEFAULT_PARAMS = {"flat": {}, "ivf": {"nlist": 1024, "nprobe": 16}, "hnsw": {"M": 32, "efSearch": 128,
                                                                             "efConstruction": 80},
                  "multihash": {"nhash": 4, "b": 16, "nflip": 2}}


#: the smallest value of each parameter (all are whole numbers)
PARAM_MINIMUM = {"nlist": 1, "nprobe": 1, "M": 2, "efSearch": 1, "efConstruction": 1, "nhash": 1, "b": 1, "nflip": 0}


def index_params(kind: str, params: dict | None, backend: str = "", nbits: int | None = None) -> dict:
    """``params`` over the defaults of index type ``kind``, checked: a parameter the type
    does not take, a value that is not a whole number or is out of range, is refused in
    one line (the same check for every backend, before anything is encoded)."""
    if kind not in DEFAULT_PARAMS:
        raise InvalidInput(f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
    merged = {**DEFAULT_PARAMS[kind], **(params or {})}
    unknown = set(merged) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise InvalidInput(f"index type {kind!r}{' on ' + backend if backend else ''} has no parameter(s) "
                           f"{sorted(unknown)}; it takes {sorted(DEFAULT_PARAMS[kind]) or 'none'}")
    for name, value in merged.items():
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = merged[name] = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < PARAM_MINIMUM[name]:
            raise InvalidInput(f"--param {name}={value}: {name} takes a whole number >= {PARAM_MINIMUM[name]} "
                               f"(default {DEFAULT_PARAMS[kind][name]})")
    if kind == "ivf" and "nprobe" not in (params or {}):
        merged["nprobe"] = min(merged["nprobe"], merged["nlist"])  # the default probes at most every list
    if kind == "ivf" and merged["nprobe"] > merged["nlist"]:
        raise InvalidInput(f"--param nprobe={merged['nprobe']} is more than nlist={merged['nlist']}: an IVF index "
                           f"probes at most its nlist lists; lower nprobe")
    if kind == "multihash" and nbits is not None and merged["nhash"] * merged["b"] > nbits:
        raise InvalidInput(f"--param nhash={merged['nhash']} x b={merged['b']} is more than the {nbits} bits of a "
                           f"code; lower b or nhash")
    return merged


def check_training_size(kind: str, params: dict, n_items: int) -> None:
    """An IVF index learns its ``nlist`` centroids from the first commit: refuse, before
    any encoding, a build whose items cannot train it."""
    if kind == "ivf" and 0 < n_items < int(params["nlist"]):
        raise InvalidInput(f"--param nlist={params['nlist']} needs at least {params['nlist']} items to train on, and "
                           f"this build has {n_items}: lower nlist (about {max(1, int(n_items ** 0.5))}, the square "
                           f"root of the item count) or use --type flat")
