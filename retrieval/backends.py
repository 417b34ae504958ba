"""Binary index backends: one modality's packed codes with 64-bit ids.

``FaissBinaryIndex`` wraps faiss' binary indexes, chosen by name:

=========== ================================== ===================================
name        faiss index                        add / remove / update
=========== ================================== ===================================
flat        IndexBinaryFlat (exact; default)   yes / yes / yes
ivf         IndexBinaryIVF (nlist, nprobe)     yes / yes / yes (needs training)
hnsw        IndexBinaryHNSW (M, efSearch)      yes / no / no  (rebuild, or use flat/ivf)
multihash   IndexBinaryMultiHash (nhash, b,    yes / no / no  (rebuild, or use flat/ivf)
            nflip)
=========== ================================== ===================================

Tie order (documented, deterministic): results are sorted by Hamming distance, and
items at equal distance by their position in the index, i.e. the order they were
added (an updated item counts as added at its update). For ``flat`` this holds at the
cut-off too: faiss' heap search breaks ties between equal distances by position (its
heaps compare the ids on a tie), the order its slower counting-sort search
(``use_heap = False``, used until this release) gives; ``tests/test_index.py`` checks the
two agree. Approximate indexes return the candidates they find, sorted the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np

from crossmodal.errors import CrossmodalError, InvalidInput

from .index_types import INDEX_TYPES, index_params

#: an approximate index answers a filter that keeps at most this share of its items
#: exactly, over those items' codes; a wider filter widens its candidate list instead
#: (at 1M items, 10 % exactly cost 2.1x an unfiltered IVF query: ``bench_filtered.py``)
EXACT_SUBSET_SHARE = 0.05


class UnsupportedOperation(CrossmodalError, RuntimeError):
    pass


class DamagedIndexFile(CrossmodalError, ValueError):
    """A stored index file disagrees with the manifest that lists it (a hand edit)."""


def _ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


class FaissBinaryIndex:
    """One modality's binary index over faiss, with stable int64 ids."""

    def __init__(self, nbits: int, kind: str = "flat", params: dict | None = None, index=None):
        import faiss

        if kind not in INDEX_TYPES:
            raise InvalidInput(f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
        if nbits % 8:
            raise InvalidInput(f"code length {nbits} is not a multiple of 8")
        self.nbits, self.kind = nbits, kind
        self.params = index_params(kind, params, nbits=nbits)
        self.index = index if index is not None else self._new()
        self._changed()
        self._apply_search_params()

    def _new(self):
        import faiss

        d, p = self.nbits, self.params
        if self.kind == "flat":
            inner = faiss.IndexBinaryFlat(d)
        elif self.kind == "ivf":
            self._quantizer = faiss.IndexBinaryFlat(d)
            inner = faiss.IndexBinaryIVF(self._quantizer, d, int(p["nlist"]))
            inner.own_fields = True
            self._quantizer.this.disown()
            return inner  # IVF stores ids itself
        elif self.kind == "hnsw":
            inner = faiss.IndexBinaryHNSW(d, int(p["M"]))
            inner.hnsw.efConstruction = int(p["efConstruction"])
        else:
            inner = faiss.IndexBinaryMultiHash(d, int(p["nhash"]), int(p["b"]))
        idmap = faiss.IndexBinaryIDMap(inner)  # not IDMap2: its reverse hash map costs ~40 B an item
        idmap.own_fields = True
        inner.this.disown()
        return idmap

    def _changed(self) -> None:
        """Forget what filtered search cached about the contents (they just changed)."""
        self._by_position: tuple | None = None  # (ids, codes or None) by position: :meth:`_contents`
        self._position_of: tuple[np.ndarray, np.ndarray] | None = None  # ids sorted, their positions
        self._selector: tuple | None = None  # (allowed array, bitmap, search parameters) of the last filter
        self._subset: tuple | None = None  # (allowed array, a flat index of its codes, their ids): approximate types

    def _inner(self):
        import faiss
        return faiss.downcast_IndexBinary(self.index.index) if self.kind != "ivf" else self.index

    def _apply_search_params(self) -> None:
        inner = self._inner()
        if self.kind == "ivf":
            inner.nprobe = int(self.params["nprobe"])
        elif self.kind == "hnsw":
            inner.hnsw.efSearch = int(self.params["efSearch"])
        elif self.kind == "multihash":
            inner.nflip = int(self.params["nflip"])

    # ---- contents ------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def _check_codes(self, codes) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] * 8 != self.nbits:
            raise ValueError(f"codes must be uint8 [n, {self.nbits // 8}] for a {self.nbits}-bit index, "
                             f"got shape {codes.shape}")
        return codes

    def train(self, codes) -> None:
        codes = self._check_codes(codes)
        if self.kind == "ivf" and not self.index.is_trained:
            nlist = int(self.params["nlist"])
            if len(codes) < nlist:
                raise InvalidInput(f"ivf with nlist={nlist} needs at least {nlist} training codes, got {len(codes)}; "
                                 f"lower nlist (about sqrt(n)) or use flat")
            self.index.train(codes)

    def add(self, ids, codes) -> None:
        codes, ids = self._check_codes(codes), _ids(ids)
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        if not self.index.is_trained:
            self.train(codes)
        self._changed()
        if self.kind != "ivf":
            # faiss appends ids one by one: size the id vector first so it does not grow by doubling
            old = self.index.id_map.size()
            self.index.id_map.resize(old + len(ids))
            self.index.id_map.resize(old)
        self.index.add_with_ids(codes, ids)

    def remove(self, ids) -> int:
        import faiss

        if self.kind in ("hnsw", "multihash"):
            raise UnsupportedOperation(
                f"a {self.kind} index cannot remove or update items (faiss does not support it); "
                f"rebuild the index, or build it with --type flat or --type ivf, which can")
        self._changed()
        return int(self.index.remove_ids(faiss.IDSelectorBatch(_ids(ids))))

    def stored_ids(self) -> np.ndarray:
        """Ids in index order (flat, hnsw, multihash)."""
        import faiss
        return faiss.vector_to_array(self.index.id_map)

    # ---- search ------------------------------------------------------------------
    def search(self, codes, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: (distances int32 [Q, k], ids int64 [Q, k]); missing slots have id -1.
        ``allowed`` (sorted ids): only those items; a flat index skips the others inside
        its scan (an ``IDSelector``), the approximate types widen their candidate list."""
        codes = self._check_codes(codes)
        k = int(k)
        if k <= 0:
            raise ValueError("k must be positive")
        if self.ntotal == 0 or (allowed is not None and not len(allowed)):
            return np.full((len(codes), k), -1, np.int32), np.full((len(codes), k), -1, np.int64)
        if allowed is not None and self.kind != "flat":
            if len(allowed) <= EXACT_SUBSET_SHARE * self.ntotal:
                return self._search_subset(codes, k, allowed)
            return widened_search(lambda c, kk: self.search(c, kk), codes, k, allowed, self.ntotal)
        if allowed is not None:  # flat: the scan itself skips what the filter does not allow
            D, positions = self._inner().search(codes, k, params=self._selecting(allowed))
            I = np.where(positions >= 0, self._contents()[0][np.maximum(positions, 0)], -1)
        else:
            D, I = self.index.search(codes, k)
        D = D.astype(np.int32)
        if self.kind != "flat":
            D, I = _sort_rows(D, I)
        D[I < 0] = -1
        return D, I

    def range_search(self, codes, radius: int, allowed: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All items within Hamming distance ``radius`` (inclusive), per query, sorted by
        (distance, index order); ``allowed`` (sorted ids): only those."""
        codes = self._check_codes(codes)
        if self.ntotal == 0 or (allowed is not None and not len(allowed)):
            return [(np.zeros(0, np.int32), np.zeros(0, np.int64)) for _ in range(len(codes))]
        if self.kind == "hnsw":
            raise UnsupportedOperation("hnsw has no radius search in faiss; use flat, ivf or multihash")
        # faiss' binary range search keeps d < radius: ask for radius + 1 (distances are integers)
        if allowed is not None and self.kind == "flat":
            lims, D, positions = self._inner().range_search(codes, int(radius) + 1, params=self._selecting(allowed))
            I = self._contents()[0][positions]
        else:
            lims, D, I = self.index.range_search(codes, int(radius) + 1)
        out = []
        for q in range(len(codes)):
            d, i = D[lims[q]:lims[q + 1]].astype(np.int32), I[lims[q]:lims[q + 1]]
            if allowed is not None and self.kind != "flat":
                keep = is_allowed(i, allowed)
                d, i = d[keep], i[keep]
            pos = np.argsort(d, kind="stable")
            out.append((d[pos], i[pos]))
        return out

    def _search_subset(self, codes: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among a few allowed items (an approximate index would probe lists
        that hold none of them): their codes, in index order, scanned by a flat index."""
        import faiss

        if self._subset is None or self._subset[0] is not allowed:
            ids, all_codes = self._contents()
            pos = np.sort(self._positions(allowed))
            flat = faiss.IndexBinaryFlat(self.nbits)
            flat.add(np.ascontiguousarray(all_codes[pos]))
            self._subset = (allowed, flat, ids[pos])  # the same filter asked again scans at once
        _, flat, sub_ids = self._subset
        D = np.full((len(codes), k), -1, np.int32)
        I = np.full((len(codes), k), -1, np.int64)
        if len(sub_ids):
            d, i = flat.search(codes, min(k, len(sub_ids)))
            D[:, :d.shape[1]], I[:, :i.shape[1]] = d, np.where(i >= 0, sub_ids[np.maximum(i, 0)], -1)
        return D, I

    def _contents(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids, codes) by position, cached until the next change; a flat index, which
        filters inside its own scan, needs only the ids."""
        if self._by_position is None:
            self._by_position = (self.stored_ids(), None) if self.kind == "flat" else self.codes_of_all()
        return self._by_position

    def _positions(self, allowed: np.ndarray) -> np.ndarray:
        """Positions (in :meth:`_contents`) of the ``allowed`` ids this index holds."""
        if self._position_of is None:
            stored = self._contents()[0]
            order = np.argsort(stored, kind="stable")
            self._position_of = (stored[order], order)
        ids, positions = self._position_of
        if not len(ids):
            return np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(ids, allowed), len(ids) - 1)
        return positions[pos[ids[pos] == allowed]]

    def _selecting(self, allowed: np.ndarray):
        """faiss search parameters whose selector keeps only ``allowed`` ids: a bitmap over
        the flat index's positions (one bit an item: checking it costs the scan next to
        nothing), made once for the same allowed array."""
        import faiss

        if self._selector is not None and self._selector[0] is allowed:
            return self._selector[2]
        mask = np.zeros(len(self._contents()[0]), bool)
        mask[self._positions(allowed)] = True
        bitmap = np.packbits(mask, bitorder="little")
        params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        self._selector = (allowed, bitmap, params)  # the bitmap lives as long as the selector reads it
        return params

    def codes_of_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, packed code), in index order: for comparisons of all items with all
        (near-duplicates)."""
        import faiss

        if self.kind == "ivf":
            invlists = self.index.invlists
            ids, codes = [], []
            for lst in range(invlists.nlist):
                n = invlists.list_size(lst)
                if n:
                    ids.append(faiss.rev_swig_ptr(invlists.get_ids(lst), n).copy())
                    codes.append(faiss.rev_swig_ptr(invlists.get_codes(lst), n * self.nbits // 8).copy()
                                 .reshape(n, self.nbits // 8))
            if not ids:
                return np.zeros(0, np.int64), np.zeros((0, self.nbits // 8), np.uint8)
            return np.concatenate(ids), np.concatenate(codes)
        ids = self.stored_ids()
        inner = self._inner()
        flat = inner if self.kind == "flat" else faiss.downcast_IndexBinary(inner.storage)  # hnsw, multihash
        return ids, faiss.vector_to_array(flat.xb).reshape(len(ids), self.nbits // 8)

    # ---- persistence ----------------------------------------------------------------
    def write_into(self, folder: Path, modality: str) -> None:
        self.write(str(Path(folder) / f"{modality}.faissbin"))

    def location(self) -> str:
        return "a faiss file in the index folder"

    @classmethod
    def read_from(cls, folder: Path, modality: str, nbits: int, kind: str, params: dict,
                  options: dict | None = None) -> "FaissBinaryIndex":
        return cls.read(str(Path(folder) / f"{modality}.faissbin"), nbits, kind, params)

    @classmethod
    def create(cls, nbits: int, modality: str, kind: str, params: dict, options: dict | None = None
               ) -> "FaissBinaryIndex":
        return cls(nbits, kind, params)

    def write(self, path: str) -> None:
        import faiss
        faiss.write_index_binary(self.index, str(path))

    @classmethod
    def read(cls, path: str, nbits: int, kind: str, params: dict) -> "FaissBinaryIndex":
        import faiss

        index = faiss.read_index_binary(str(path))
        if index.d != nbits:
            raise DamagedIndexFile(f"{Path(path).parent / 'manifest.json'} says 'nbits' {nbits}, but {Path(path).name} "
                               f"holds {index.d}-bit codes: the manifest was edited; set its nbits back to {index.d} "
                               f"or rebuild the index")
        return cls(nbits, kind, params, index=index)

    def memory_bytes(self) -> int:
        """Bytes faiss holds for codes and ids: read from its vectors for flat (codes
        ``xb`` + ``id_map``); code size + 8-byte id per item for the other types."""
        if self.kind == "flat":
            return int(self._inner().xb.size() + 8 * self.index.id_map.size())
        return self.ntotal * (self.nbits // 8 + 8)


def is_allowed(ids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are in the sorted array ``allowed``."""
    pos = np.searchsorted(allowed, ids)
    return (pos < len(allowed)) & (allowed[np.minimum(pos, len(allowed) - 1)] == ids)


def widened_search(search: Callable, codes: np.ndarray, k: int, allowed: np.ndarray, ntotal: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A filtered top-k for a backend that cannot filter inside its scan: ask for as many
    candidates as the filter's share of the index says should hold ``k`` allowed ones
    (with a margin), keep the allowed, and double until each query has ``k`` (or the
    whole index was asked). Same order as the unfiltered search, minus what is not allowed."""
    want = min(k, len(allowed))
    asked = min(ntotal, max(k, int(1.5 * k * ntotal / len(allowed)) + 1))
    while True:
        D, I = search(codes, asked)
        keep = is_allowed(I, allowed) & (I >= 0)
        if asked >= ntotal or (keep.sum(axis=1) >= want).all():
            break
        asked = min(ntotal, asked * 2)
    outD = np.full((len(codes), k), -1, np.int32)
    outI = np.full((len(codes), k), -1, np.int64)
    for q in range(len(codes)):
        d, i = D[q][keep[q]][:k], I[q][keep[q]][:k]
        outD[q, :len(d)], outI[q, :len(i)] = d, i
    return outD, outI


def _sort_rows(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by distance (stable), missing slots (-1) last."""
    key = np.where(I < 0, np.iinfo(np.int32).max, D)
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


@runtime_checkable
class BinaryIndex(Protocol):
    """What :class:`~retrieval.index.CrossModalIndex` needs of one modality's backend."""
    nbits: int
    kind: str
    params: dict

    @property
    def ntotal(self) -> int: ...
    def add(self, ids, codes) -> None: ...
    def remove(self, ids) -> int: ...
    def search(self, codes, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query; ``allowed`` (sorted ids): only those items."""
    def range_search(self, codes, radius: int, allowed: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every item within ``radius`` per query; ``allowed`` (sorted ids): only those."""
    def codes_of_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, packed code) the index holds."""
    def memory_bytes(self) -> int: ...
    def location(self) -> str:
        """Where the codes live, for ``crossmodal info`` (a file name, a server collection)."""
    def write_into(self, folder: Path, modality: str) -> None:
        """Persist what lives in this process into a version folder (a server-side
        backend has nothing to write)."""


class Backend(NamedTuple):
    """How to make a backend for a new index and reopen it from a saved version."""
    create: Callable[..., BinaryIndex]   # (nbits, modality, kind, params, backend options)
    open: Callable[..., BinaryIndex]     # (version folder, modality, nbits, kind, params, backend options)


def _milvus() -> type:
    from .milvus import MilvusBinaryIndex  # pymilvus is imported only when this backend is used
    return MilvusBinaryIndex


BACKENDS: dict[str, Backend] = {
    "faiss": Backend(FaissBinaryIndex.create, FaissBinaryIndex.read_from),
    "milvus": Backend(lambda *a, **k: _milvus().create(*a, **k), lambda *a, **k: _milvus().read_from(*a, **k)),
}
