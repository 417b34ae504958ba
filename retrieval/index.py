"""A cross-modal index: one binary index per modality, a metadata store, a manifest.

On disk an index is a folder::

    IDX/CURRENT            name of the live version folder (replaced atomically)
    IDX/v-<n>/manifest.json   format version, code length, index type and parameters,
                              model fingerprint, item counts, sha256 of every file
    IDX/v-<n>/<modality>.faissbin, metadata.sqlite, [rerank_<modality>.npz]

Saving writes a complete new version folder, fsyncs it, then swaps ``CURRENT`` with
``os.replace``: a process killed at any moment leaves the previous version live and
intact. Loading verifies every checksum and refuses an index made by another model or
code length.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import FaissBinaryIndex
from .store import Item, MetadataStore, item_id

FORMAT_VERSION = 1
MODALITIES = ("image", "text", "frame")


class IndexMismatch(ValueError):
    """The index was built by another model or at another code length."""


class NotAnIndex(FileNotFoundError):
    pass


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


class CrossModalIndex:
    """Per-modality binary indexes built by one model at one code length."""

    def __init__(self, nbits: int, model_fingerprint: str, index_type: str = "flat", params: dict | None = None,
                 backend: str = "faiss", milvus_uri: str | None = None):
        self.nbits, self.model_fingerprint = nbits, model_fingerprint
        self.index_type, self.params = index_type, dict(params or {})
        self.backend, self.milvus_uri = backend, milvus_uri
        self.model_path: str | None = None  # where the model lives, so `search` needs no --model
        self.indexes: dict[str, object] = {}
        self.store = MetadataStore()
        self.rerank: dict[str, dict[int, np.ndarray]] = {}
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    # ---- building ----------------------------------------------------------------------
    def _backend(self, modality: str):
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; one of {MODALITIES}")
        if modality not in self.indexes:
            if self.backend == "milvus":
                from .milvus import MilvusBinaryIndex
                self.indexes[modality] = MilvusBinaryIndex(self.nbits, collection=f"crossmodal_{modality}",
                                                           uri=self.milvus_uri, index_type=self.index_type,
                                                           params=self.params)
            else:
                self.indexes[modality] = FaissBinaryIndex(self.nbits, self.index_type, self.params)
                self.params = self.indexes[modality].params
        return self.indexes[modality]

    def add(self, modality: str, items: Sequence[Item], codes: np.ndarray, floats: np.ndarray | None = None,
            update: bool = False) -> dict[str, int]:
        """Add items with their packed codes. An item already present (same modality and
        key) is skipped, or replaced when ``update``. Returns counts."""
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
        if update and is_present.any():
            self.remove(modality, ids[keep & is_present])
            is_present[:] = False
        new = keep & ~is_present
        if new.any():
            self._backend(modality).add(ids[new], codes[new])
            self.store.upsert(modality, ids[new].tolist(), [it for it, n in zip(items, new) if n])
            if floats is not None:
                store = self.rerank.setdefault(modality, {})
                for i, f in zip(ids[new], np.asarray(floats, dtype=np.float16)[new]):
                    store[int(i)] = f
        return {"added": int(new.sum()), "skipped": int((keep & is_present).sum() + (~keep).sum())}

    def remove(self, modality: str, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        if modality not in self.indexes or not ids:
            return 0
        n = self._backend(modality).remove(np.asarray(ids, dtype=np.int64))
        self.store.delete(ids)
        for i in ids:
            self.rerank.get(modality, {}).pop(i, None)
        return n

    def remove_keys(self, modality: str, keys: Sequence[str]) -> int:
        return self.remove(modality, [item_id(modality, k) for k in keys])

    def count(self, modality: str) -> int:
        return self.indexes[modality].ntotal if modality in self.indexes else 0

    # ---- search ------------------------------------------------------------------------
    def search(self, codes: np.ndarray, modality: str, k: int = 10, radius: int | None = None,
               query_floats: np.ndarray | None = None, rerank: int = 0) -> list[list[Hit]]:
        """Search ``modality`` with packed query codes. ``radius`` switches to radius
        search (all items within the Hamming radius, nearest first, at most ``k`` when
        k > 0). ``rerank`` > 0 re-ranks the top ``rerank`` candidates by cosine of the
        continuous outputs (``query_floats`` and the floats stored at add time)."""
        codes = np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8))
        if codes.shape[1] * 8 != self.nbits:
            raise IndexMismatch(f"query codes have {codes.shape[1] * 8} bits; this index holds {self.nbits}-bit codes")
        if modality not in self.indexes or self.indexes[modality].ntotal == 0:
            return [[] for _ in range(len(codes))]
        be = self.indexes[modality]
        if radius is not None:
            found = be.range_search(codes, radius)
            if k:
                found = [(d[:max(k, rerank)], i[:max(k, rerank)]) for d, i in found]
        else:
            D, I = be.search(codes, max(k, rerank))
            found = [(d[i >= 0], i[i >= 0]) for d, i in zip(D, I)]
        meta = self.store.get(np.unique(np.concatenate([i for _, i in found] or [np.zeros(0, np.int64)])).tolist())
        out = []
        for q, (d, ids) in enumerate(found):
            hits = [Hit(int(i), int(dd), **{k_: v for k_, v in meta[int(i)].items() if k_ != "id"})
                    for dd, i in zip(d, ids) if int(i) in meta]
            if rerank and query_floats is not None and modality in self.rerank:
                hits = self._rerank(hits[:rerank], np.asarray(query_floats[q], dtype=np.float32), modality)
            out.append(hits[:k] if k else hits)
        return out

    def _rerank(self, hits: list[Hit], qf: np.ndarray, modality: str) -> list[Hit]:
        store = self.rerank[modality]
        qn = qf / max(np.linalg.norm(qf), 1e-12)
        for h in hits:
            f = store.get(h.id)
            if f is not None:
                f = f.astype(np.float32)
                h.score = float(f @ qn / max(np.linalg.norm(f), 1e-12))
        # Hamming distance first, then the continuous similarity breaks ties
        return sorted(hits, key=lambda h: (h.distance, -(h.score if h.score is not None else -2.0)))

    # ---- persistence ---------------------------------------------------------------------
    def manifest(self, files: dict[str, str]) -> dict:
        return {"format": "crossmodal-index", "format_version": FORMAT_VERSION, "nbits": self.nbits,
                "index_type": self.index_type, "params": self.params, "backend": self.backend,
                "milvus_uri": self.milvus_uri, "model_fingerprint": self.model_fingerprint,
                "model_path": self.model_path,
                "counts": {m: self.count(m) for m in self.indexes}, "created": self.created,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}

    def save(self, folder: str | os.PathLike) -> Path:
        """Atomically write the index to ``folder`` (see the module docstring)."""
        folder = Path(folder)
        if folder.exists() and not (folder / "CURRENT").is_file() and any(folder.iterdir()):
            raise NotAnIndex(f"{folder} exists and is not a crossmodal index; refusing to write into it")
        folder.mkdir(parents=True, exist_ok=True)
        current = _read_current(folder)
        n = int(current.split("-")[1]) + 1 if current else 1
        version = f"v-{n:06d}"
        tmp = folder / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {}
        if self.backend == "faiss":
            for m, be in self.indexes.items():
                be.write(str(tmp / f"{m}.faissbin"))
        self.store.save(str(tmp / "metadata.sqlite"))
        for m, store in self.rerank.items():
            if store:
                ids = np.fromiter(store.keys(), dtype=np.int64, count=len(store))
                np.savez(tmp / f"rerank_{m}.npz", ids=ids, floats=np.stack(list(store.values())))
        for f in sorted(tmp.iterdir()):
            files[f.name] = _sha256(f)
        (tmp / "manifest.json").write_text(json.dumps(self.manifest(files), indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.replace(tmp, folder / version)
        cur_tmp = folder / ".CURRENT.tmp"
        cur_tmp.write_text(version)
        with open(cur_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(cur_tmp, folder / "CURRENT")
        _fsync_dir(folder)
        for old in folder.iterdir():  # older versions and leftovers of killed saves
            if old.name not in (version, "CURRENT"):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, model_fingerprint: str | None = None,
             nbits: int | None = None) -> "CrossModalIndex":
        """Open an index, verifying checksums; refuse one made by another model
        (``model_fingerprint``) or at another code length (``nbits``)."""
        folder = Path(folder)
        current = _read_current(folder)
        if not current:
            raise NotAnIndex(f"{folder} is not a crossmodal index (no CURRENT file); build one with "
                             f"`crossmodal index build`")
        vdir = folder / current
        try:
            manifest = json.loads((vdir / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise NotAnIndex(f"{folder}: manifest unreadable ({e})") from None
        if manifest.get("format") != "crossmodal-index":
            raise NotAnIndex(f"{folder}: not a crossmodal index manifest")
        if manifest["format_version"] > FORMAT_VERSION:
            raise ValueError(f"{folder} was written by a newer crossmodal (format {manifest['format_version']})")
        for name, digest in manifest["files"].items():
            path = vdir / name
            if not path.is_file():
                raise ValueError(f"{folder}: file {name} listed in the manifest is missing")
            if _sha256(path) != digest:
                raise ValueError(f"{folder}: checksum mismatch for {name}: the index is corrupt")
        if model_fingerprint is not None and manifest["model_fingerprint"] != model_fingerprint:
            raise IndexMismatch(f"{folder} was built by model {manifest['model_fingerprint']}, not by the model in use "
                                f"({model_fingerprint}); rebuild the index with this model or load that model")
        if nbits is not None and manifest["nbits"] != nbits:
            raise IndexMismatch(f"{folder} holds {manifest['nbits']}-bit codes, not {nbits}-bit ones")
        idx = cls(manifest["nbits"], manifest["model_fingerprint"], manifest["index_type"], manifest["params"],
                  manifest.get("backend", "faiss"), manifest.get("milvus_uri"))
        idx.created = manifest["created"]
        idx.model_path = manifest.get("model_path")
        idx.store = MetadataStore(str(vdir / "metadata.sqlite"))
        for m in manifest["counts"]:
            if idx.backend == "faiss":
                idx.indexes[m] = FaissBinaryIndex.read(str(vdir / f"{m}.faissbin"), idx.nbits, idx.index_type,
                                                       idx.params)
            else:
                idx._backend(m)
        for m in MODALITIES:
            p = vdir / f"rerank_{m}.npz"
            if p.is_file():
                z = np.load(p)
                idx.rerank[m] = dict(zip(z["ids"].tolist(), z["floats"]))
        return idx

    def info(self) -> dict:
        return {"nbits": self.nbits, "index_type": self.index_type, "params": self.params, "backend": self.backend,
                "model_fingerprint": self.model_fingerprint, "counts": {m: self.count(m) for m in self.indexes},
                "memory_bytes": {m: be.memory_bytes() for m, be in self.indexes.items()
                                 if hasattr(be, "memory_bytes")}}


def _read_current(folder: Path) -> str | None:
    p = folder / "CURRENT"
    if not p.is_file():
        return None
    name = p.read_text().strip()
    return name if name.startswith("v-") and (folder / name).is_dir() else None
