"""A cross-modal index: one binary index per modality, a metadata store, a re-rank
store; and :func:`write_index`, the one function every change to an index goes through.

A version of an index on disk (the versioned folder itself is ``retrieval.index_folder``)::

    IDX/v-<n>/manifest.json   format version, code length, index type and parameters,
                              model fingerprint, item counts, sha256 of every file
    IDX/v-<n>/<modality>.faissbin, metadata.sqlite,
              rerank_<modality>.{ids,vectors,scales}.npy   the re-rank store (``retrieval.rerank``)

Writers are serialised: :func:`write_index` holds the folder's writer lock across load →
apply → write, so two processes (two commands, or a server and a command) never drop
each other's items, and a crash at any moment leaves the previous version live.
Loading verifies every checksum and refuses an index made by another model or code length.
"""
from __future__ import annotations

import datetime as _dt
import uuid
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from crossmodal.errors import CrossmodalError, InvalidInput

from .backends import BACKENDS, Backend, BinaryIndex
from .index_folder import (IndexCorrupt, NotAnIndex, discard_folder, fault_point, has_index, read_current_version,
                           read_live, read_manifest_of, refuse_foreign, remove_empty_folder, write_version,
                           writer_lock)
from .filters import FilterColumns, ItemFilter
from .rerank import RerankStore, by_cosine, default_candidates, unit_rows
from .store import Item, MetadataStore, item_id

__all__ = ["CrossModalIndex", "Hit", "IndexChanges", "IndexCorrupt", "IndexMismatch", "NewIndex", "NotAnIndex",
           "SignCodes", "WriteReport", "check_index_destination", "has_index", "read_current_version", "read_manifest",
           "write_index"]

FORMAT_VERSION = 1
MODALITIES = ("image", "text", "frame")


class IndexMismatch(CrossmodalError, ValueError):
    """The index was built by another model or at another code length."""


@dataclass
class Hit:
    id: int
    distance: int
    modality: str
    key: str
    source: str | None
    labels: list
    video: str | None = None
    timestamp: float | None = None
    extra: dict | None = None
    score: float | None = None  # cosine of continuous outputs, when re-ranked

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def backend_of(name: str) -> Backend:
    if name not in BACKENDS:
        raise InvalidInput(f"unknown index backend {name!r}; one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


class CrossModalIndex:
    """Per-modality binary indexes built by one model at one code length."""

    def __init__(self, nbits: int, model_fingerprint: str, index_type: str = "flat", params: dict | None = None,
                 backend: str = "faiss", backend_options: dict | None = None, uid: str | None = None):
        self.nbits, self.model_fingerprint = nbits, model_fingerprint
        self.index_type, self.params = index_type, dict(params or {})
        #: backend settings kept in the manifest (a Milvus URI, database, prefix; never a secret)
        self.backend, self.backend_options = backend, dict(backend_options or {})
        #: this index's own id: a server-side backend names its collections after it
        self.uid = uuid.uuid4().hex[:12] if uid is None else uid
        self.model_path: str | None = None  # where the model lives, so `search` needs no --model
        #: what ``index build`` was given (photo roots, dataset and splits): a rerun of the
        #: same build resumes, any other build into the folder is refused
        self.build_inputs: dict | None = None
        self.indexes: dict[str, object] = {}
        self.metadata = MetadataStore()
        #: how the index re-ranks (``{"dtype": "int8", "candidates": N}``), None when it keeps
        #: no outputs: set when it is built, recorded in the manifest
        self.rerank_config: dict | None = None
        #: per modality, the outputs of its items for re-ranking (``retrieval.rerank``)
        self.rerank_stores: dict[str, RerankStore] = {}
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.version: str | None = None  # the version folder it was loaded from
        self.changes = 0  # items added, removed or re-stamped since load: a commit with none writes nothing
        self._generation = 0  # bumped by every change: the filter columns are rebuilt after one
        self._filter_columns: dict[str, tuple[int, FilterColumns, dict]] = {}

    # ---- building ----------------------------------------------------------------------
    def _backend(self, modality: str) -> BinaryIndex:
        if modality not in MODALITIES:
            raise InvalidInput(f"unknown modality {modality!r}; one of {MODALITIES}")
        if modality not in self.indexes:
            be = backend_of(self.backend).create(self.nbits, modality, self.index_type, self.params,
                                                 self._options())
            self.params = be.params
            self.indexes[modality] = be
        return self.indexes[modality]

    def _open_backend(self, modality: str, version_dir: Path) -> BinaryIndex:
        return backend_of(self.backend).open(version_dir, modality, self.nbits, self.index_type, self.params,
                                             self._options())

    def _options(self) -> dict:
        return {**self.backend_options, "index_id": self.uid}

    def keep_outputs(self, dtype: str = "int8", candidates: int | None = None) -> None:
        """Keep every new item's outputs for two-stage search (a new index does by
        default): its queries then re-rank the ``candidates`` nearest codes."""
        self.rerank_config = {"dtype": dtype, "candidates": default_candidates(self.nbits) if candidates is None
                              else int(candidates)}

    @property
    def rerank_candidates(self) -> int:
        """How many Hamming candidates a query re-ranks unless told (0: Hamming order only)."""
        return int(self.rerank_config["candidates"]) if self.rerank_config and self.rerank_stores else 0

    def add(self, modality: str, items: Sequence[Item], codes: np.ndarray, floats: np.ndarray | None = None,
            update: bool = False) -> dict[str, int]:
        """Add items with their packed codes, and their continuous outputs (``floats``)
        when the index keeps them (:meth:`keep_outputs`). An item already present (same
        modality and key) is skipped, or replaced when ``update``. Returns counts:
        ``added`` (replaced items included), ``replaced`` and ``skipped``."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.shape != (len(items), self.nbits // 8):
            raise ValueError(f"expected codes of shape ({len(items)}, {self.nbits // 8}) for {self.nbits}-bit "
                             f"codes, got {codes.shape}")
        ids = np.array([item_id(modality, it.key) for it in items], dtype=np.int64)
        _, first = np.unique(ids, return_index=True)  # duplicates inside one call: keep the first
        keep = np.zeros(len(ids), bool)
        keep[first] = True
        present = self.metadata.existing(ids[keep].tolist())
        is_present = np.array([i in present for i in ids])
        replaced = int((keep & is_present).sum()) if update else 0
        if update and is_present.any():
            self.remove(modality, ids[keep & is_present])
            is_present[:] = False
        new = keep & ~is_present
        if new.any():
            self._backend(modality).add(ids[new], codes[new])
            self.metadata.upsert(modality, ids[new].tolist(), [it for it, n in zip(items, new) if n])
            if floats is not None and self.rerank_config is not None:
                store = self.rerank_stores.setdefault(modality, RerankStore(self.rerank_config["dtype"]))
                store.add(ids[new], np.asarray(floats, dtype=np.float32)[new])
        self.changes += int(new.sum())
        self._generation += 1
        return {"added": int(new.sum()), "replaced": replaced,
                "skipped": int((keep & is_present).sum() + (~keep).sum())}

    def remove(self, modality: str, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        if modality not in self.indexes or not ids:
            return 0
        n = self._backend(modality).remove(np.asarray(ids, dtype=np.int64))
        self.metadata.delete(ids)
        self.changes += n
        self._generation += 1
        if modality in self.rerank_stores:
            self.rerank_stores[modality].remove(ids)
        return n

    def restamp(self, modality: str, items: Sequence[Item]) -> int:
        """Replace the metadata of items already indexed, codes and outputs untouched (a
        photo whose file was touched but whose content, and so code, is the same)."""
        ids = [item_id(modality, it.key) for it in items]
        known = self.metadata.existing(ids)
        keep = [(i, it) for i, it in zip(ids, items) if i in known]
        if keep:
            self.metadata.upsert(modality, [i for i, _ in keep], [it for _, it in keep])
            self.changes += len(keep)
            self._generation += 1
        return len(keep)

    def replace_frames(self, video: str, items: Sequence[Item], codes: np.ndarray, floats: np.ndarray) -> int:
        """A video's frames, replacing any it had (re-adding a video is an update)."""
        old = [f["id"] for f in self.metadata.frames_of(video)]
        if old:
            self.remove("frame", old)
        return self.add("frame", items, codes, floats=floats)["added"] if len(items) else 0

    def item(self, item: int) -> dict | None:
        """One item's metadata by id, or None."""
        return self.metadata.get([item]).get(item)

    def items_of(self, modality: str):
        """Every item of a modality with its metadata (``key``, ``extra``, ...)."""
        return self.metadata.items_of(modality)

    def frames_of(self, video: str) -> list[dict]:
        """A video's frames, in time order."""
        return self.metadata.frames_of(video)

    def contains(self, modality: str, key: str) -> bool:
        return bool(self.metadata.existing([item_id(modality, key)]))

    def remove_keys(self, modality: str, keys: Sequence[str]) -> int:
        return self.remove(modality, [item_id(modality, k) for k in keys])

    def count(self, modality: str) -> int:
        return self.indexes[modality].ntotal if modality in self.indexes else 0

    def allowed_ids(self, modality: str, where: ItemFilter) -> np.ndarray:
        """Sorted ids of the ``modality`` items that pass ``where`` (``retrieval.filters``)."""
        if where.under and modality == "text":
            raise InvalidInput("a folder filter (--under) selects photos and video frames, not captions: search "
                               "--target image or frame with it")
        cached = self._filter_columns.get(modality)
        if cached is None or cached[0] != self._generation:
            cached = (self._generation, FilterColumns(self.metadata.filter_rows(modality)), {})
            self._filter_columns[modality] = cached
        answers = cached[2]  # the same filter asked again (a user paging, a server) is not worked out again
        if where not in answers:
            if len(answers) >= 32:
                answers.pop(next(iter(answers)))
            answers[where] = cached[1].allowed(where)
        return answers[where]

    # ---- search ------------------------------------------------------------------------
    def search(self, codes: np.ndarray, modality: str, k: int = 10, radius: int | None = None,
               query_floats: np.ndarray | None = None, rerank: int | None = None,
               where: ItemFilter | None = None) -> list[list[Hit]]:
        """Search ``modality`` with packed query codes. ``radius`` switches to radius
        search (all items within the Hamming radius, nearest first, at most ``k`` when
        k > 0). With ``query_floats``, the ``rerank`` nearest codes (default: the index's
        :attr:`rerank_candidates`; 0: none) are re-ranked by cosine of the query's outputs
        and the stored ones: the two-stage search every new index serves. ``where``: only
        items that pass the filter, as if the others were not in the index."""
        if modality not in MODALITIES:
            raise InvalidInput(f"unknown target {modality!r}; one of {', '.join(MODALITIES)}")
        if k < 0 or (k == 0 and radius is None):
            raise InvalidInput(f"k must be a positive number of results, got {k}")
        rerank = self.rerank_candidates if rerank is None else rerank
        if rerank < 0:
            raise InvalidInput(f"rerank must be 0 (off) or a positive number of candidates, got {rerank}")
        if radius is not None and radius < 0:
            raise InvalidInput(f"radius must be a Hamming distance >= 0, got {radius}")
        codes = np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8))
        if codes.shape[1] * 8 != self.nbits:
            raise IndexMismatch(f"query codes have {codes.shape[1] * 8} bits; this index holds {self.nbits}-bit codes")
        allowed = self.allowed_ids(modality, where) if where else None
        if modality not in self.indexes or self.indexes[modality].ntotal == 0:
            return [[] for _ in range(len(codes))]
        be = self.indexes[modality]
        if allowed is not None and not len(allowed):
            return [[] for _ in range(len(codes))]
        # never ask for more than the index holds: k is a user's number, memory is not
        k, rerank = min(k, be.ntotal), min(rerank, be.ntotal)
        if radius is not None:
            found = be.range_search(codes, radius, allowed)
            if k:
                found = [(d[:max(k, rerank)], i[:max(k, rerank)]) for d, i in found]
        else:
            D, I = be.search(codes, max(k, rerank), allowed)
            found = [(d[i >= 0], i[i >= 0]) for d, i in zip(D, I)]
        out = []
        for q, (d, ids) in enumerate(found):
            scores = np.full(len(ids), np.nan)
            if rerank and query_floats is not None and modality in self.rerank_stores and len(ids):
                d, ids, scores = self._rerank(d, ids, scores, np.asarray(query_floats[q], np.float32), modality, rerank)
            out.append(self._hits(modality, d, ids, scores, k))
        return out

    def _hits(self, modality: str, d: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        """The first ``k`` (all when 0) ranked ids that the metadata knows, as hits. Metadata
        is read for those alone, not for every candidate re-ranked."""
        hits: list[Hit] = []
        start = 0
        while start < len(ids) and (not k or len(hits) < k):
            stop = len(ids) if not k else min(len(ids), start + k - len(hits))
            meta = self.metadata.get(ids[start:stop].tolist())
            hits += [Hit(int(i), int(dd), **{k_: v for k_, v in meta[int(i)].items() if k_ != "id"},
                         score=None if np.isnan(sc) else float(sc))
                     for dd, i, sc in zip(d[start:stop], ids[start:stop], scores[start:stop]) if int(i) in meta]
            start = stop  # ids the metadata does not know (a server's leftovers) are skipped
        return hits

    def _rerank(self, d: np.ndarray, ids: np.ndarray, scores: np.ndarray, query: np.ndarray, modality: str,
                n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first ``n`` candidates ordered by cosine of the stored outputs, highest first;
        any without stored outputs (added before the index kept them) follow them in
        Hamming order, then the candidates beyond ``n``."""
        vectors, scales, found = self.rerank_stores[modality].lookup(ids[:n])
        if not found.any():
            return d, ids, scores
        if vectors.shape[1] != query.shape[-1]:
            raise IndexMismatch(f"the index keeps {vectors.shape[1]} outputs per item for re-ranking, the query has "
                                f"{query.shape[-1]}: rebuild the index with this model")
        by_score, cos = by_cosine(unit_rows(query[None, :])[0], vectors[found], scales[found])
        head = np.full(len(found), np.nan)
        head[found] = cos
        ranked = np.flatnonzero(found)[by_score]
        order = np.concatenate([ranked, np.flatnonzero(~found), np.arange(len(head), len(ids))])
        scores = np.concatenate([head, scores[len(head):]])
        return d[order], ids[order], scores[order]

    # ---- files of a version ----------------------------------------------------------------
    def manifest_fields(self) -> dict:
        return {"format_version": FORMAT_VERSION, "nbits": self.nbits, "index_type": self.index_type,
                "params": self.params, "backend": self.backend, "backend_options": self.backend_options,
                "uid": self.uid, "model_fingerprint": self.model_fingerprint, "model_path": self.model_path,
                "build_inputs": self.build_inputs, "rerank": self.rerank_config,
                "counts": {m: self.count(m) for m in self.indexes}, "created": self.created,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def _write_files(self, vdir: Path) -> dict:
        """Write this index's files into a new version folder; its manifest fields."""
        for m, be in self.indexes.items():
            be.write_into(vdir, m)
        self.metadata.save(str(vdir / "metadata.sqlite"))
        for m, store in self.rerank_stores.items():
            if len(store):
                store.write_into(vdir, m)
        return self.manifest_fields()

    @classmethod
    def _from_version(cls, name: str, vdir: Path, manifest: dict) -> "CrossModalIndex":
        idx = cls(manifest["nbits"], manifest["model_fingerprint"], manifest["index_type"], manifest["params"],
                  manifest.get("backend", "faiss"), _backend_options(manifest), uid=manifest.get("uid", ""))
        idx.created = manifest["created"]
        idx.model_path = manifest.get("model_path")
        idx.build_inputs = manifest.get("build_inputs")
        idx.version = name
        idx.metadata = MetadataStore(str(vdir / "metadata.sqlite"))
        for m in manifest["counts"]:
            idx.indexes[m] = idx._open_backend(m, vdir)
        idx.rerank_config = manifest.get("rerank")
        for m in MODALITIES:
            legacy = vdir / f"rerank_{m}.npz"
            if legacy.is_file():  # an earlier release's --store-floats: re-ranks only when asked, as it did
                idx.rerank_config = idx.rerank_config or {"dtype": "int8", "candidates": 0}
                idx.rerank_stores[m] = RerankStore.from_legacy_npz(legacy, idx.rerank_config["dtype"])
            elif idx.rerank_config is not None:
                store = RerankStore.open(vdir, m, idx.rerank_config["dtype"])
                if store is not None:
                    idx.rerank_stores[m] = store
        return idx

    @classmethod
    def load(cls, folder: str | os.PathLike, model_fingerprint: str | None = None,
             nbits: int | None = None) -> "CrossModalIndex":
        """Open the live version of an index for reading, verifying checksums; refuse one
        made by another model (``model_fingerprint``) or at another code length (``nbits``).
        Changes go through :func:`write_index`, never through a loaded index."""
        folder = Path(folder)

        def open_version(name: str, vdir: Path, manifest: dict) -> "CrossModalIndex":
            _check_fits(folder, manifest, model_fingerprint, nbits)
            return cls._from_version(name, vdir, manifest)

        return read_live(folder, open_version, _wrong_fields)

    def info(self) -> dict:
        return {"nbits": self.nbits, "index_type": self.index_type, "params": self.params, "backend": self.backend,
                "backend_options": self.backend_options, "uid": self.uid, "model_fingerprint": self.model_fingerprint,
                "counts": {m: self.count(m) for m in self.indexes},
                "memory_bytes": {m: be.memory_bytes() for m, be in self.indexes.items()},
                "rerank": self.rerank_config,
                "rerank_store_bytes": {m: int(len(st) * st.bytes_per_item()) for m, st in self.rerank_stores.items()},
                "codes_at": {m: be.location() for m, be in self.indexes.items()}}



def _wrong_fields(manifest: dict) -> list[str]:
    """What is wrong with an index manifest's own fields (hand edits), in words."""
    missing = [k for k in ("format_version", "nbits", "index_type", "params", "model_fingerprint", "counts",
                           "created") if k not in manifest]
    if missing:
        return [f"lacks {', '.join(map(repr, missing))}: the index is damaged"]
    types = {"format_version": int, "nbits": int, "index_type": str, "params": dict, "model_fingerprint": str,
             "counts": dict, "created": str}
    wrong = [f"{k!r} should be {t.__name__ if t is not dict else 'an object'}, not {json.dumps(manifest[k])[:30]}"
             for k, t in types.items() if not isinstance(manifest[k], t) or isinstance(manifest[k], bool)]
    if not wrong and (manifest["nbits"] <= 0 or manifest["nbits"] % 8):
        wrong.append(f"'nbits' should be a positive multiple of 8, not {manifest['nbits']}")
    return [f"was edited: {'; '.join(wrong)}"] if wrong else []


def _check_fits(folder: Path, manifest: dict, model_fingerprint: str | None, nbits: int | None) -> None:
    if manifest["format_version"] > FORMAT_VERSION:
        raise InvalidInput(f"{folder} was written by a newer crossmodal (format {manifest['format_version']}); "
                           f"upgrade crossmodal to read it")
    if model_fingerprint is not None and manifest["model_fingerprint"] != model_fingerprint:
        raise IndexMismatch(f"{folder} was built by model {manifest['model_fingerprint']}, not by the model in use "
                            f"({model_fingerprint}); rebuild the index with this model or load that model")
    if nbits is not None and manifest["nbits"] != nbits:
        raise IndexMismatch(f"{folder} holds {manifest['nbits']}-bit codes, not {nbits}-bit ones")


def read_manifest(folder: str | os.PathLike) -> dict:
    """The live version's manifest (model fingerprint and path, code length, counts)
    without loading or verifying the index: for commands that only need to know what an
    index is before they start (the writes they then make load it fully)."""
    folder = Path(folder)
    manifest = read_manifest_of(folder, read_current_version(folder), _wrong_fields)
    _check_fits(folder, manifest, None, None)
    return manifest


def _backend_options(manifest: dict) -> dict:
    """Backend options of a manifest (format 1 indexes kept only ``milvus_uri``)."""
    if "backend_options" in manifest:
        return manifest["backend_options"]
    return {"uri": manifest["milvus_uri"]} if manifest.get("milvus_uri") else {}


def discard_empty_index(folder: str | os.PathLike) -> bool:
    """Remove the index in ``folder`` if it holds no item (what a failed or fruitless
    first build leaves), so it never blocks the next build; True if it was removed. An
    index with items is never touched."""
    folder = Path(folder)
    if not has_index(folder):
        return False
    with writer_lock(folder):
        try:
            empty = not any(read_manifest(folder).get("counts", {}).values())
        except CrossmodalError:
            return False
        if empty:
            discard_folder(folder)
    if empty:
        remove_empty_folder(folder)
    return empty


def check_index_destination(folder: str | os.PathLike) -> None:
    """Refuse an output folder before any work is done: only an index folder, an empty
    one, or an index's leftovers is written into."""
    refuse_foreign(folder)


# ---- the one writer --------------------------------------------------------------------
class CodeModel(Protocol):
    """What the writer needs of a model: whose codes these are, and how to make them."""

    def fingerprint(self) -> str: ...

    def quantize(self, relaxed: np.ndarray, nbits: int) -> np.ndarray: ...


class SignCodes:
    """A :class:`CodeModel` for vectors made elsewhere: the code of a vector is the signs
    of its first ``nbits`` values (what the model's ``sign`` quantiser does to its outputs)."""

    def __init__(self, fingerprint: str):
        self._fingerprint = fingerprint

    def fingerprint(self) -> str:
        return self._fingerprint

    def quantize(self, relaxed: np.ndarray, nbits: int) -> np.ndarray:
        from crossmodal.codes import sign_codes

        try:
            return sign_codes(relaxed, nbits)
        except ValueError as e:
            raise InvalidInput(str(e)) from None


@dataclass
class NewIndex:
    """How to create an index where there is none (``index build``)."""
    nbits: int
    index_type: str = "flat"
    params: dict = field(default_factory=dict)
    backend: str = "faiss"
    backend_options: dict = field(default_factory=dict)
    rerank_dtype: str | None = "int8"  #: how the outputs are kept for re-ranking; None: codes alone
    rerank_candidates: int | None = None  #: None: the default for the code length
    model_path: str | None = None  #: where the model lives, so `search` needs no --model
    build_inputs: dict | None = None  #: what the build indexes: the same build resumes

    def create(self, model_fingerprint: str) -> CrossModalIndex:
        idx = CrossModalIndex(self.nbits, model_fingerprint, self.index_type, self.params, self.backend,
                              self.backend_options)
        idx.model_path, idx.build_inputs = self.model_path, self.build_inputs
        if self.rerank_dtype is not None:
            idx.keep_outputs(self.rerank_dtype, self.rerank_candidates)
        return idx


@dataclass
class _Addition:
    modality: str
    items: list[Item]
    relaxed: np.ndarray
    update: bool

    def apply(self, idx: CrossModalIndex, model: CodeModel, report: "WriteReport") -> None:
        res = idx.add(self.modality, self.items, model.quantize(self.relaxed, idx.nbits), floats=self.relaxed,
                      update=self.update)
        for what in ("added", "replaced", "skipped"):
            report.count(self.modality, what, res[what])


@dataclass
class _Restamp:
    modality: str
    items: list[Item]

    def apply(self, idx: CrossModalIndex, model: CodeModel, report: "WriteReport") -> None:
        report.count(self.modality, "restamped", idx.restamp(self.modality, self.items))


@dataclass
class _Frames:
    video: str
    items: list[Item]
    relaxed: np.ndarray

    def apply(self, idx: CrossModalIndex, model: CodeModel, report: "WriteReport") -> None:
        codes = model.quantize(self.relaxed, idx.nbits) if self.items else np.zeros((0, idx.nbits // 8), np.uint8)
        report.count("frame", "added", idx.replace_frames(self.video, self.items, codes, self.relaxed))


@dataclass
class _Removal:
    modality: str
    keys: list[str] | None = None
    rule: Callable[[dict], bool] | None = None  #: decided on the newest version, under the lock

    def apply(self, idx: CrossModalIndex, model: CodeModel, report: "WriteReport") -> None:
        keys = self.keys if self.rule is None else [m["key"] for m in idx.items_of(self.modality) if self.rule(m)]
        report.count(self.modality, "removed", idx.remove_keys(self.modality, keys))


@dataclass
class IndexChanges:
    """What one commit does, applied in the order given, under the writer lock. Items
    come with their continuous outputs; the writer quantises them at the index's code
    length and keeps the outputs if the index re-ranks."""
    steps: list = field(default_factory=list)

    def add(self, modality: str, items: Sequence[Item], relaxed: np.ndarray, update: bool = False) -> "IndexChanges":
        """Add items; one already present (same modality and key) is skipped, or replaced with ``update``."""
        if len(items):
            self.steps.append(_Addition(modality, list(items), np.asarray(relaxed, np.float32), update))
        return self

    def restamp(self, modality: str, items: Sequence[Item]) -> "IndexChanges":
        """New metadata for items already indexed; codes untouched (a photo touched, not changed)."""
        if len(items):
            self.steps.append(_Restamp(modality, list(items)))
        return self

    def replace_frames(self, video: str, items: Sequence[Item], relaxed: np.ndarray) -> "IndexChanges":
        """A video's frames, replacing any it had."""
        self.steps.append(_Frames(video, list(items), np.asarray(relaxed, np.float32)))
        return self

    def remove_keys(self, modality: str, keys: Sequence[str]) -> "IndexChanges":
        if len(keys):
            self.steps.append(_Removal(modality, keys=list(keys)))
        return self

    def remove_where(self, modality: str, rule: Callable[[dict], bool]) -> "IndexChanges":
        """Remove the items whose metadata ``rule`` accepts, decided on the newest version
        under the lock (a sync's 'gone' photos)."""
        self.steps.append(_Removal(modality, rule=rule))
        return self

    def added_counts(self) -> dict[str, int]:
        """Items each modality gains (at most: some may be present already)."""
        out: dict[str, int] = {}
        for step in self.steps:
            if isinstance(step, _Addition):
                out[step.modality] = out.get(step.modality, 0) + len(step.items)
        return out

    def extend(self, other: "IndexChanges") -> "IndexChanges":
        """Append another's steps: several sources in one commit (captions riding with photos)."""
        self.steps += other.steps
        return self

    def __bool__(self) -> bool:
        return bool(self.steps)

    def apply_to(self, idx: CrossModalIndex, model: CodeModel | None) -> "WriteReport":
        """Apply to an index in memory. :func:`write_index` does this under the lock and
        persists the result; an application's own in-memory index calls it directly."""
        report = WriteReport()
        for step in self.steps:
            step.apply(idx, model, report)
        return report


@dataclass
class WriteReport:
    """What a commit did, per modality (``of``) and over all of them (``added`` ...), and
    the version it wrote (None: none)."""
    version: str | None = None
    counts: dict = field(default_factory=dict)  #: items per modality after the commit
    by_modality: dict = field(default_factory=dict)  #: modality -> {added, replaced, skipped, restamped, removed}

    def count(self, modality: str, what: str, n: int) -> None:
        per = self.by_modality.setdefault(modality, {})
        per[what] = per.get(what, 0) + n

    def of(self, modality: str, what: str) -> int:
        """One count of one modality's items (photos apart from the captions of the same commit)."""
        return self.by_modality.get(modality, {}).get(what, 0)

    def _total(self, what: str) -> int:
        return sum(per.get(what, 0) for per in self.by_modality.values())

    @property
    def added(self) -> int:
        """New items, replacements included."""
        return self._total("added")

    @property
    def replaced(self) -> int:
        """Items that were there and were replaced (``update``)."""
        return self._total("replaced")

    @property
    def skipped(self) -> int:
        """Items already present, left as they were."""
        return self._total("skipped")

    @property
    def restamped(self) -> int:
        return self._total("restamped")

    @property
    def removed(self) -> int:
        return self._total("removed")

    def merge(self, other: "WriteReport") -> "WriteReport":
        for modality, per in other.by_modality.items():
            for what, n in per.items():
                self.count(modality, what, n)
        self.version, self.counts = other.version or self.version, other.counts or self.counts
        return self


def write_index(folder: str | os.PathLike, model: CodeModel | None, changes: IndexChanges | None = None,
                create: NewIndex | CrossModalIndex | None = None, replace: bool = False) -> WriteReport:
    """Apply ``changes`` to the index in ``folder`` as one serialised, atomic commit: the
    only way anything writes an index. Holding the folder's writer lock it opens the
    newest version (refusing an index of another model or code length), applies the
    changes and writes the next version if anything changed; a kill at any moment leaves
    the previous version live.

    ``create``: the index to start when the folder holds none (or, with ``replace``, to
    start afresh over the one it holds: a rebuild), described (:class:`NewIndex`) or
    built in memory; it is written even with no changes.
    Without ``create`` a folder with no index is an error. ``model`` may be None for
    changes that need no codes (removals)."""
    folder = Path(folder)
    refuse_foreign(folder)
    with writer_lock(folder):
        fingerprint = model.fingerprint() if model is not None else None
        fresh = create is not None and (replace or not has_index(folder))
        if fresh:
            idx = create if isinstance(create, CrossModalIndex) else create.create(fingerprint)
        else:
            idx = CrossModalIndex.load(folder, fingerprint, create.nbits if create else None)
            fault_point("loaded")
        idx.changes = 0
        report = (changes or IndexChanges()).apply_to(idx, model)
        if fresh or idx.changes:
            report.version = write_version(folder, idx._write_files)
        report.counts = {m: idx.count(m) for m in idx.indexes}
    return report
