"""A cross-modal index: one binary index per modality, a metadata store, a manifest.

On disk an index is a folder::

    IDX/CURRENT            name of the live version folder (replaced atomically)
    IDX/v-<n>/manifest.json   format version, code length, index type and parameters,
                              model fingerprint, item counts, sha256 of every file
    IDX/v-<n>/<modality>.faissbin, metadata.sqlite,
              rerank_<modality>.{ids,vectors,scales}.npy   the re-rank store (``retrieval.rerank``)

    IDX/.lock              the writer lock (an flock: released by the kernel when its holder dies)

Writers are serialised: every save, and every load → modify → save
(:meth:`CrossModalIndex.updating`), holds ``IDX/.lock``, so two processes (two commands,
or a server and a command) never drop each other's items. Saving writes a complete new
version folder, fsyncs it, then swaps ``CURRENT`` with ``os.replace``: a process killed at
any moment leaves the previous version live and intact, and the next writer removes what
the killed one left (any version newer than ``CURRENT``). The version just replaced is
kept one more round for readers that read ``CURRENT`` a moment before the switch.
Loading verifies every checksum and refuses an index made by another model or code length.
"""
from __future__ import annotations

import contextlib
import sqlite3
import sys
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from filelock import FileLock

from crossmodal.atomic import atomic_write_text, fsync_dir
from crossmodal.errors import CrossmodalError, InvalidInput, UnsafeOutput

from .backends import BACKENDS, Backend, BinaryIndex
from .rerank import RerankStore, cosines, default_candidates, unit_rows
from .store import Item, MetadataStore, item_id

FORMAT_VERSION = 1
MODALITIES = ("image", "text", "frame")


VERSION_NAME = re.compile(r"v-\d{6,}")
TMP_NAME = re.compile(r"\.v-\d{6,}\.tmp|\.CURRENT(\.\d+)?\.tmp")
LOCK_NAME = ".lock"
#: who holds the writer lock (pid and command), for the message of a writer that waits
LOCK_OWNER_NAME = ".lock.owner"


class IndexMismatch(CrossmodalError, ValueError):
    """The index was built by another model or at another code length."""


class NotAnIndex(CrossmodalError, FileNotFoundError):
    """The folder holds no index (or not a readable ``CURRENT``)."""


class IndexCorrupt(CrossmodalError, ValueError):
    """The live version's files do not match its manifest."""


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        self.store = MetadataStore()
        #: how the index re-ranks (``{"dtype": "int8", "candidates": N}``), None when it keeps
        #: no outputs: set when it is built, recorded in the manifest
        self.rerank_config: dict | None = None
        #: per modality, the outputs of its items for re-ranking (``retrieval.rerank``)
        self.rerank_stores: dict[str, RerankStore] = {}
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.version: str | None = None  # the version folder it was loaded from
        self.changes = 0  # items added or removed since load or save; a save with none is skipped by `updating`

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
        present = self.store.existing(ids[keep].tolist())
        is_present = np.array([i in present for i in ids])
        replaced = int((keep & is_present).sum()) if update else 0
        if update and is_present.any():
            self.remove(modality, ids[keep & is_present])
            is_present[:] = False
        new = keep & ~is_present
        if new.any():
            self._backend(modality).add(ids[new], codes[new])
            self.store.upsert(modality, ids[new].tolist(), [it for it, n in zip(items, new) if n])
            if floats is not None and self.rerank_config is not None:
                store = self.rerank_stores.setdefault(modality, RerankStore(self.rerank_config["dtype"]))
                store.add(ids[new], np.asarray(floats, dtype=np.float32)[new])
        self.changes += int(new.sum())
        return {"added": int(new.sum()), "replaced": replaced,
                "skipped": int((keep & is_present).sum() + (~keep).sum())}

    def remove(self, modality: str, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        if modality not in self.indexes or not ids:
            return 0
        n = self._backend(modality).remove(np.asarray(ids, dtype=np.int64))
        self.store.delete(ids)
        self.changes += n
        if modality in self.rerank_stores:
            self.rerank_stores[modality].remove(ids)
        return n

    def restamp(self, modality: str, items: Sequence[Item]) -> int:
        """Replace the metadata of items already indexed, codes and outputs untouched (a
        photo whose file was touched but whose content, and so code, is the same)."""
        ids = [item_id(modality, it.key) for it in items]
        known = self.store.existing(ids)
        keep = [(i, it) for i, it in zip(ids, items) if i in known]
        if keep:
            self.store.upsert(modality, [i for i, _ in keep], [it for _, it in keep])
            self.changes += len(keep)
        return len(keep)

    def replace_frames(self, video: str, items: Sequence[Item], codes: np.ndarray, floats: np.ndarray) -> int:
        """A video's frames, replacing any it had (re-adding a video is an update)."""
        old = [f["id"] for f in self.store.frames_of(video)]
        if old:
            self.remove("frame", old)
        return self.add("frame", items, codes, floats=floats)["added"] if len(items) else 0

    def item(self, item: int) -> dict | None:
        """One item's metadata by id, or None."""
        return self.store.get([item]).get(item)

    def items_of(self, modality: str):
        """Every item of a modality with its metadata (``key``, ``extra``, ...)."""
        return self.store.items_of(modality)

    def frames_of(self, video: str) -> list[dict]:
        """A video's frames, in time order."""
        return self.store.frames_of(video)

    def contains(self, modality: str, key: str) -> bool:
        return bool(self.store.existing([item_id(modality, key)]))

    def remove_keys(self, modality: str, keys: Sequence[str]) -> int:
        return self.remove(modality, [item_id(modality, k) for k in keys])

    def count(self, modality: str) -> int:
        return self.indexes[modality].ntotal if modality in self.indexes else 0

    # ---- search ------------------------------------------------------------------------
    def search(self, codes: np.ndarray, modality: str, k: int = 10, radius: int | None = None,
               query_floats: np.ndarray | None = None, rerank: int | None = None) -> list[list[Hit]]:
        """Search ``modality`` with packed query codes. ``radius`` switches to radius
        search (all items within the Hamming radius, nearest first, at most ``k`` when
        k > 0). With ``query_floats``, the ``rerank`` nearest codes (default: the index's
        :attr:`rerank_candidates`; 0: none) are re-ranked by cosine of the query's outputs
        and the stored ones: the two-stage search every new index serves."""
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
        if modality not in self.indexes or self.indexes[modality].ntotal == 0:
            return [[] for _ in range(len(codes))]
        be = self.indexes[modality]
        # never ask for more than the index holds: k is a user's number, memory is not
        k, rerank = min(k, be.ntotal), min(rerank, be.ntotal)
        if radius is not None:
            found = be.range_search(codes, radius)
            if k:
                found = [(d[:max(k, rerank)], i[:max(k, rerank)]) for d, i in found]
        else:
            D, I = be.search(codes, max(k, rerank))
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
            meta = self.store.get(ids[start:stop].tolist())
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
        head = np.where(found, cosines(unit_rows(query[None, :]), vectors, scales)[0], np.nan)
        ranked = np.flatnonzero(found)[np.argsort(-head[found], kind="stable")]
        order = np.concatenate([ranked, np.flatnonzero(~found), np.arange(len(head), len(ids))])
        scores = np.concatenate([head, scores[len(head):]])
        return d[order], ids[order], scores[order]

    # ---- persistence ---------------------------------------------------------------------
    def manifest(self, files: dict[str, str]) -> dict:
        return {"format": "crossmodal-index", "format_version": FORMAT_VERSION, "nbits": self.nbits,
                "index_type": self.index_type, "params": self.params, "backend": self.backend,
                "backend_options": self.backend_options, "uid": self.uid, "model_fingerprint": self.model_fingerprint,
                "model_path": self.model_path, "build_inputs": self.build_inputs, "rerank": self.rerank_config,
                "counts": {m: self.count(m) for m in self.indexes}, "created": self.created,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}

    def save(self, folder: str | os.PathLike) -> Path:
        """Atomically write the index to ``folder`` as its next version, holding the
        folder's writer lock (see the module docstring)."""
        folder = Path(folder)
        _refuse_foreign(folder)
        with writer_lock(folder):
            return self._write_version(folder)

    @classmethod
    @contextmanager
    def updating(cls, folder: str | os.PathLike, model_fingerprint: str | None = None,
                 nbits: int | None = None) -> Iterator["CrossModalIndex"]:
        """Load → modify → save as one serialised step::

            with CrossModalIndex.updating(IDX) as idx:
                idx.add(...)

        The writer lock is held throughout, so the index yielded is the newest version
        and no other writer can slip a version in between; a new version is written only
        when something changed, and not at all when the block raises."""
        folder = Path(folder)
        with writer_lock(folder):
            idx = cls.load(folder, model_fingerprint, nbits)
            _fault_point("loaded")
            idx.changes = 0
            yield idx
            if idx.changes:
                idx._write_version(folder)

    def _write_version(self, folder: Path) -> Path:
        """Write version N+1 and switch ``CURRENT`` to it. The caller holds the lock, so
        anything newer than ``CURRENT`` is debris of a killed writer and is removed."""
        try:
            return self._write_version_unchecked(folder)
        except (OSError, sqlite3.Error, RuntimeError) as e:
            error = storage_error(folder, e)
            if error is e:
                raise
            _remove_debris(folder, keep={_read_current(folder)} - {None})  # the half-written version goes
            raise error from None

    def _write_version_unchecked(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        current = _read_current(folder)
        _remove_debris(folder, keep={current} if current else set())
        version = f"v-{_version_number(current) + 1 if current else 1:06d}"
        tmp = folder / f".{version}.tmp"
        tmp.mkdir()
        for m, be in self.indexes.items():
            be.write_into(tmp, m)
        self.store.save(str(tmp / "metadata.sqlite"))
        for m, store in self.rerank_stores.items():
            if len(store):
                store.write_into(tmp, m)
        files = {f.name: _sha256(f) for f in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps(self.manifest(files), indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        _fault_point("version-files-written")
        os.replace(tmp, folder / version)
        _fault_point("version-renamed")
        atomic_write_text(folder / "CURRENT", version, on_written=lambda: _fault_point("current-tmp-written"))
        _fault_point("current-switched")
        # the version just replaced stays one more round, for readers that read CURRENT
        # a moment ago; older ones and leftovers go
        _remove_debris(folder, keep={version} | ({current} if current else set()))
        self.changes = 0
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, model_fingerprint: str | None = None,
             nbits: int | None = None) -> "CrossModalIndex":
        """Open the live version of an index, verifying checksums; refuse one made by
        another model (``model_fingerprint``) or at another code length (``nbits``).

        A writer may switch ``CURRENT`` and retire the version being read while this
        runs; the load then starts again on the new version."""
        folder = Path(folder)
        for attempt in range(5):
            current = read_current_version(folder)
            try:
                return cls._load_version(folder, current, model_fingerprint, nbits)
            except (IndexCorrupt, NotAnIndex):
                if attempt == 4 or read_current_version(folder) == current:
                    raise

    @classmethod
    def _load_version(cls, folder: Path, current: str, model_fingerprint: str | None,
                      nbits: int | None) -> "CrossModalIndex":
        vdir = folder / current
        manifest = _read_manifest(folder, current)
        recover = _RECOVER.format(folder=folder)
        for name, digest in manifest["files"].items():
            path = vdir / name
            if not path.is_file():
                raise IndexCorrupt(f"{folder}: file {name} listed in the manifest is missing; {recover}")
            if _sha256(path) != digest:
                raise IndexCorrupt(f"{folder}: checksum mismatch for {name}: the index is corrupt; {recover}")
        # a data file whose entry was deleted from the manifest would escape its checksum (SQLite's
        # own transient files, which a reader may create beside the store, are not data files)
        unlisted = sorted(p.name for p in vdir.iterdir() if p.name not in manifest["files"]
                          and (p.name == "metadata.sqlite" or p.suffix in (".faissbin", ".npy", ".npz")))
        if unlisted:
            raise IndexCorrupt(f"{folder}: {', '.join(unlisted)} in {current} not listed in its manifest: the index "
                               f"was edited by hand; {recover}")
        if model_fingerprint is not None and manifest["model_fingerprint"] != model_fingerprint:
            raise IndexMismatch(f"{folder} was built by model {manifest['model_fingerprint']}, not by the model in use "
                                f"({model_fingerprint}); rebuild the index with this model or load that model")
        if nbits is not None and manifest["nbits"] != nbits:
            raise IndexMismatch(f"{folder} holds {manifest['nbits']}-bit codes, not {nbits}-bit ones")
        idx = cls(manifest["nbits"], manifest["model_fingerprint"], manifest["index_type"], manifest["params"],
                  manifest.get("backend", "faiss"), _backend_options(manifest), uid=manifest.get("uid", ""))
        idx.created = manifest["created"]
        idx.model_path = manifest.get("model_path")
        idx.build_inputs = manifest.get("build_inputs")
        idx.version = current
        idx.store = MetadataStore(str(vdir / "metadata.sqlite"))
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

    def info(self) -> dict:
        return {"nbits": self.nbits, "index_type": self.index_type, "params": self.params, "backend": self.backend,
                "backend_options": self.backend_options, "uid": self.uid, "model_fingerprint": self.model_fingerprint,
                "counts": {m: self.count(m) for m in self.indexes},
                "memory_bytes": {m: be.memory_bytes() for m, be in self.indexes.items()},
                "rerank": self.rerank_config,
                "rerank_store_bytes": {m: int(len(st) * st.bytes_per_item()) for m, st in self.rerank_stores.items()},
                "codes_at": {m: be.location() for m, be in self.indexes.items()}}


_RECOVER = "restore the folder from a backup, or rebuild it with `crossmodal index build --out {folder}`"


def _read_manifest(folder: Path, current: str) -> dict:
    """The manifest of version ``current``, checked for format and fields (not checksums)."""
    vdir = folder / current
    recover = _RECOVER.format(folder=folder)
    if not vdir.is_dir():
        raise NotAnIndex(f"{folder}/CURRENT names version {current}, which is missing: {recover}")
    try:
        manifest = json.loads((vdir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexCorrupt(f"{folder}: manifest of {current} unreadable ({e}); {recover}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "crossmodal-index":
        raise NotAnIndex(f"{folder}: {current}/manifest.json is not a crossmodal index manifest")
    missing = [k for k in ("format_version", "nbits", "index_type", "params", "model_fingerprint", "counts",
                           "created", "files") if k not in manifest]
    if missing:
        raise IndexCorrupt(f"{folder}: {current}/manifest.json lacks {', '.join(map(repr, missing))}: "
                           f"the index is damaged; {recover}")
    types = {"format_version": int, "nbits": int, "index_type": str, "params": dict, "model_fingerprint": str,
             "counts": dict, "created": str, "files": dict}
    wrong = [f"{k!r} should be {t.__name__ if t is not dict else 'an object'}, not {json.dumps(manifest[k])[:30]}"
             for k, t in types.items() if not isinstance(manifest[k], t) or isinstance(manifest[k], bool)]
    if not wrong and (manifest["nbits"] <= 0 or manifest["nbits"] % 8):
        wrong.append(f"'nbits' should be a positive multiple of 8, not {manifest['nbits']}")
    if not wrong and not all(isinstance(v, str) for v in manifest["files"].values()):
        wrong.append("'files' should map each file to its sha256")
    if wrong:
        raise IndexCorrupt(f"{folder}: {current}/manifest.json was edited: {'; '.join(wrong)}; {recover}")
    if manifest["format_version"] > FORMAT_VERSION:
        raise InvalidInput(f"{folder} was written by a newer crossmodal (format {manifest['format_version']}); "
                           f"upgrade crossmodal to read it")
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict:
    """The live version's manifest (model fingerprint and path, code length, counts)
    without loading or verifying the index: for commands that only need to know what an
    index is before they start (the writes they then make load it fully)."""
    folder = Path(folder)
    return _read_manifest(folder, read_current_version(folder))


def _version_number(name: str) -> int:
    return int(name.split("-")[1])


def _read_current(folder: Path) -> str | None:
    """The name in ``CURRENT`` when it is well-formed, else None (no check that it exists)."""
    p = folder / "CURRENT"
    if not p.is_file():
        return None
    name = p.read_text(errors="replace").strip()
    return name if VERSION_NAME.fullmatch(name) else None


def read_current_version(folder: str | os.PathLike) -> str:
    """The live version's name; a clear :class:`NotAnIndex` when there is none. Cheap
    (one small file): a server calls it per request to notice a newer version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAnIndex(f"{folder} does not exist; build an index with `crossmodal index build --out {folder}`")
    p = folder / "CURRENT"
    if not p.is_file():
        raise NotAnIndex(f"{folder} is not a crossmodal index (no CURRENT file); build one with "
                         f"`crossmodal index build`")
    name = _read_current(folder)
    if name is None:
        raise NotAnIndex(f"{folder}/CURRENT does not name a version (it holds {p.read_text(errors='replace')[:40]!r}); "
                         f"restore it from a backup, or rebuild with `crossmodal index build --out {folder}`")
    return name


def _is_index_debris(name: str) -> bool:
    return bool(VERSION_NAME.fullmatch(name) or TMP_NAME.fullmatch(name)) or name in (LOCK_NAME, LOCK_OWNER_NAME)


def _refuse_foreign(folder: Path) -> None:
    """Write only into an index folder, an empty one, or one holding nothing but the
    leftovers of an index (a first build killed before its ``CURRENT`` was written)."""
    if folder.exists() and not folder.is_dir():
        raise UnsafeOutput(f"{folder} is a file, not an index folder; choose another --out")
    if folder.is_dir() and not (folder / "CURRENT").is_file():
        foreign = [p.name for p in folder.iterdir() if not _is_index_debris(p.name)]
        if foreign:
            raise NotAnIndex(f"{folder} exists and is not a crossmodal index (it holds {', '.join(sorted(foreign)[:3])}"
                               f"{', ...' if len(foreign) > 3 else ''}); refusing to write into it: choose a new or "
                               f"empty --out")


def _backend_options(manifest: dict) -> dict:
    """Backend options of a manifest (format 1 indexes kept only ``milvus_uri``)."""
    if "backend_options" in manifest:
        return manifest["backend_options"]
    return {"uri": manifest["milvus_uri"]} if manifest.get("milvus_uri") else {}


def check_index_destination(folder: str | os.PathLike) -> None:
    """Refuse an output folder before any work is done (see :func:`_refuse_foreign`)."""
    _refuse_foreign(Path(folder))


def _remove_debris(folder: Path, keep: set[str]) -> None:
    """Remove every version folder but ``keep``, and leftovers of killed saves."""
    for p in folder.iterdir():
        if p.name in keep or p.name in ("CURRENT", LOCK_NAME, LOCK_OWNER_NAME):
            continue
        if _is_index_debris(p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def writer_lock(folder: str | os.PathLike, timeout: float | None = None) -> "WriterLock":
    """The exclusive writer lock of an index folder (``IDX/.lock``, an ``flock``): held
    across load → modify → save by every writer, in any process; released by the
    kernel if its holder dies. One lock object per folder in a process: a thread that
    holds it may take it again, and another thread waits like another process would.
    ``timeout``: seconds to wait (``CROSSMODAL_LOCK_TIMEOUT``, default 600)."""
    from crossmodal.settings import env_number

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(folder, e) from None
    if os.environ.get("CROSSMODAL_TEST_NO_LOCK") == "1":  # test-only: shows the concurrency test can fail
        return contextlib.nullcontext()
    key = str(folder.resolve())
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = FileLock(str(folder / LOCK_NAME))
    return WriterLock(folder, _LOCKS[key], env_number("CROSSMODAL_LOCK_TIMEOUT", 600.0) if timeout is None else timeout)


class WriterLock:
    """Takes a folder's lock; a writer that has to wait says whom it waits for, keeps
    waiting up to ``timeout`` seconds, then gives up with one line (nothing written)."""

    def __init__(self, folder: Path, lock: FileLock, timeout: float):
        self.folder, self.lock, self.timeout = folder, lock, timeout

    def __enter__(self) -> "WriterLock":
        from filelock import Timeout

        from crossmodal.errors import Unavailable

        owner_file = self.folder / LOCK_OWNER_NAME
        try:
            if self.lock.is_locked:  # this thread holds it already
                self.lock.acquire()
                return self
            try:
                self.lock.acquire(timeout=min(1.0, self.timeout))
            except Timeout:
                owner = _read_owner(owner_file)
                print(f"waiting for {owner}, which is writing to {self.folder} (up to {self.timeout:.0f} s; "
                      f"CROSSMODAL_LOCK_TIMEOUT sets it)", file=sys.stderr, flush=True)
                try:
                    self.lock.acquire(timeout=max(0.0, self.timeout - 1.0))
                except Timeout:
                    raise Unavailable(f"{self.folder} stayed locked by {owner} for {self.timeout:.0f} s; nothing was "
                                      f"written. Wait for it to finish and run this again (or raise "
                                      f"CROSSMODAL_LOCK_TIMEOUT)") from None
            try:
                owner_file.write_text(f"pid {os.getpid()} ({' '.join(os.path.basename(a) for a in sys.argv[:3])})")
            except OSError:
                pass  # only a courtesy for the next writer's message
        except OSError as e:
            raise storage_error(self.folder, e) from None
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _read_owner(path: Path) -> str:
    try:
        return "another writer (" + path.read_text().strip() + ")"
    except OSError:
        return "another writer"


def storage_error(folder: Path, e: BaseException) -> Exception:
    """A write that the disk refused, as one line saying what to do; anything else as it was."""
    import errno

    from crossmodal.errors import Unavailable

    text = str(e)
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "disk is full" in text:
        return Unavailable(f"{folder}: the disk is full ({text.splitlines()[0][:120]}); nothing was written and "
                           f"the index is as it was: free some space and run the command again")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "read-only" in text:
        return Unavailable(f"{folder} cannot be written here ({text.splitlines()[0][:120]}): searches work, but "
                           f"adding or removing needs write access to the folder (or a copy of it)")
    return e


def _fault_point(name: str) -> None:
    """Fault injection for the tests: ``CROSSMODAL_KILL_AT=<name>`` makes the process
    SIGKILL itself here, the way a power cut or an OOM kill would;
    ``CROSSMODAL_PAUSE_AT=<name>:<seconds>:<marker file>`` creates the marker and waits
    there (a writer that holds the lock while a second one starts) for the seconds, or
    until a file ``<marker>.release`` appears."""
    if os.environ.get("CROSSMODAL_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("CROSSMODAL_PAUSE_AT", "").split(":", 2)
    if pause[0] == name and len(pause) == 3:
        import time

        Path(pause[2]).touch()
        release, deadline = Path(pause[2] + ".release"), time.monotonic() + float(pause[1])
        while time.monotonic() < deadline and not release.exists():
            time.sleep(0.05)
