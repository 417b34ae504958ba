"""The Milvus backend: the :class:`~retrieval.backends.BinaryIndex` interface on a Milvus
collection with a BINARY_VECTOR field and the HAMMING metric.

``uri`` is a Milvus server (``http://host:19530``: BIN_FLAT or BIN_IVF_FLAT) or a local
file (Milvus Lite, ``milvus-lite==2.5.1``: BIN_FLAT only). pymilvus is imported only
when this backend is used.

* **One collection per index and modality**: ``<prefix>_<index id>_<modality>``, so any
  number of indexes share a server (``collection_prefix`` and ``db_name`` group them).
* **Writes are idempotent**: codes go in by ``upsert`` in batches of ``insert_batch``
  (plain inserts into a collection this process created, which nothing can repeat),
  so a write repeated after a crash (the folder's version was not written, the server
  already had the codes) leaves one copy; ids the metadata store does not know are
  dropped from results.
* **Consistency**: ``Strong`` by default, so a search right after a write sees it;
  ``Bounded`` searches faster when a little staleness is fine.
* **Secrets are never stored**: the token comes from ``token`` at open time or
  ``CROSSMODAL_MILVUS_TOKEN``; ``CROSSMODAL_MILVUS_URI`` points every index at a server
  that moved (a restart on another host or port).

Equal distances come back sorted by insertion order, as in the faiss flat backend; at
the cut-off Milvus picks which tied items to keep.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from crossmodal.errors import InvalidInput, Unavailable

from .index_types import index_params
from .backends import is_allowed, widened_search

MILVUS_INDEX_TYPES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")


@dataclass
class MilvusOptions:
    """Where and how an index lives on Milvus (stored in the index manifest, but the token)."""
    uri: str | None = None
    db_name: str = ""  #: "" = the server's default database
    collection_prefix: str = "crossmodal"
    consistency_level: str = "Strong"
    insert_batch: int = 5000
    index_id: str = ""  #: set when the index is created; names its collections

    @classmethod
    def from_dict(cls, d: dict | None) -> "MilvusOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def collection(self, modality: str) -> str:
        return "_".join(p for p in (self.collection_prefix, self.index_id, modality) if p)


class MilvusBinaryIndex:
    def __init__(self, nbits: int, modality: str, options: MilvusOptions, index_type: str = "flat",
                 params: dict | None = None):
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise Unavailable("the Milvus backend needs pymilvus (and milvus-lite for a local file): "
                              "pip install 'crossmodal[milvus]'") from None
        uri = os.environ.get("CROSSMODAL_MILVUS_URI") or options.uri
        if not uri:
            raise InvalidInput("the Milvus backend needs --milvus-uri (http://host:19530, or a local .db file)")
        if index_type not in MILVUS_INDEX_TYPES:
            raise InvalidInput(f"Milvus offers index types {sorted(MILVUS_INDEX_TYPES)}, not {index_type!r}")
        if options.consistency_level not in CONSISTENCY_LEVELS:
            raise InvalidInput(f"unknown consistency level {options.consistency_level!r}; "
                               f"one of {', '.join(CONSISTENCY_LEVELS)}")
        self.nbits, self.kind, self.options = nbits, index_type, options
        self.collection = options.collection(modality)
        self.params = index_params(index_type, params, "Milvus")
        token = os.environ.get("CROSSMODAL_MILVUS_TOKEN", "")
        try:
            self.client = MilvusClient(uri, token=token, db_name=options.db_name)
        except Exception as e:  # pymilvus raises its own types for refused connections and bad auth
            raise Unavailable(f"cannot connect to Milvus at {uri}: {type(e).__name__}: {e}") from None
        #: created by this instance: nothing on the server can repeat what we add, so plain
        #: inserts (faster than upserts) are safe
        self._fresh = not self.client.has_collection(self.collection)
        if self._fresh:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=nbits)
            ip = self.client.prepare_index_params()
            extra = {"nlist": int(self.params["nlist"])} if index_type == "ivf" else {}
            ip.add_index(field_name="code", index_type=MILVUS_INDEX_TYPES[index_type], metric_type="HAMMING",
                         params=extra)
            self.client.create_collection(self.collection, schema=schema, index_params=ip,
                                          consistency_level=options.consistency_level)
        self.client.load_collection(self.collection)
        # insertion order for tie-breaking, monotone across processes without asking the server
        self._seq = time.time_ns()

    @classmethod
    def create(cls, nbits: int, modality: str, kind: str, params: dict, options: dict) -> "MilvusBinaryIndex":
        return cls(nbits, modality, MilvusOptions.from_dict(options), index_type=kind, params=params)

    @classmethod
    def read_from(cls, folder: Path, modality: str, nbits: int, kind: str, params: dict,
                  options: dict) -> "MilvusBinaryIndex":
        return cls.create(nbits, modality, kind, params, options)  # the codes live on the server

    def write_into(self, folder: Path, modality: str) -> None:
        """Nothing to write: Milvus persists its collections itself."""

    def location(self) -> str:
        db = f", database {self.options.db_name}" if self.options.db_name else ""
        return f"Milvus collection {self.collection}{db}"

    def _query(self, **kw) -> list[dict]:
        return self.client.query(self.collection, consistency_level=self.options.consistency_level, **kw)

    @property
    def ntotal(self) -> int:
        stats = self._query(filter="", output_fields=["count(*)"])
        return int(stats[0]["count(*)"])

    def add(self, ids, codes) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        rows = [{"id": int(i), "seq": self._seq + n, "code": c.tobytes()} for n, (i, c) in enumerate(zip(ids, codes))]
        write = self.client.insert if self._fresh else self.client.upsert
        for s in range(0, len(rows), self.options.insert_batch):
            write(self.collection, rows[s:s + self.options.insert_batch])
        self._seq += len(rows)

    def remove(self, ids) -> int:
        self._fresh = False  # a removed id may come back: from here on, writes are upserts
        ids = [int(i) for i in ids]
        removed = 0
        for s in range(0, len(ids), 1000):
            present = [int(r["id"]) for r in self._query(filter=f"id in {ids[s:s + 1000]}", output_fields=["id"])]
            if present:
                self.client.delete(self.collection, ids=present)
            removed += len(present)
        return removed

    def _search(self, codes, limit: int, radius: int | None):
        params: dict = {"metric_type": "HAMMING", "params": {}}
        if self.kind == "ivf":
            params["params"]["nprobe"] = int(self.params["nprobe"])
        if radius is not None:
            params["params"].update({"radius": int(radius) + 1, "range_filter": -1})  # d < radius + 1
        res = self.client.search(self.collection, data=[c.tobytes() for c in codes], anns_field="code",
                                 limit=limit, search_params=params, output_fields=["seq"],
                                 consistency_level=self.options.consistency_level)
        out = []
        for hits in res:
            rows = sorted(((int(h["distance"]), int(h["entity"]["seq"]), int(h["id"])) for h in hits))
            out.append((np.array([r[0] for r in rows], np.int32), np.array([r[2] for r in rows], np.int64)))
        return out

    def search(self, codes, k: int, allowed: np.ndarray | None = None):
        codes = np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8))
        if allowed is not None:  # a filter the server cannot take as an expression at any size: widen
            if not len(allowed):
                return np.full((len(codes), k), -1, np.int32), np.full((len(codes), k), -1, np.int64)
            return widened_search(lambda c, kk: self.search(c, kk), codes, k, allowed, max(1, self.ntotal))
        D = np.full((len(codes), k), -1, np.int32)
        I = np.full((len(codes), k), -1, np.int64)
        for q, (d, i) in enumerate(self._search(codes, min(k, 16384), None)):
            D[q, :len(d)], I[q, :len(i)] = d, i
        return D, I

    def range_search(self, codes, radius: int, allowed: np.ndarray | None = None, limit: int = 16384):
        found = self._search(np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8)), limit, radius)
        if allowed is None:
            return found
        return [(d[keep], i[keep]) for d, i in found for keep in [is_allowed(i, allowed)]]

    def codes_of_all(self) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        it = self.client.query_iterator(self.collection, batch_size=4096, filter="", output_fields=["id", "seq", "code"])
        while batch := it.next():
            rows += [(int(r["seq"]), int(r["id"]), bytes(r["code"][0] if isinstance(r["code"], list) else r["code"]))
                     for r in batch]
        it.close()
        rows.sort()
        ids = np.array([r[1] for r in rows], np.int64)
        codes = np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), self.nbits // 8)
        return ids, codes

    def memory_bytes(self) -> int:
        return self.ntotal * (self.nbits // 8 + 16)

    def wait_until_indexed(self, timeout: float = 600.0) -> None:
        """Flush and wait until the server has built the index over every row (until then
        it searches unindexed segments exhaustively: exact, but not what IVF costs)."""
        self.client.flush(self.collection)
        name = self.client.list_indexes(self.collection)[0]
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.client.describe_index(self.collection, name)
            if info.get("indexed_rows", 0) >= info.get("total_rows", 0) and not info.get("pending_index_rows", 0):
                return
            time.sleep(1)
        raise Unavailable(f"Milvus did not finish indexing {self.collection} in {timeout:.0f} s")

    def drop(self) -> None:
        """Delete the collection from the server (what removing the index folder cannot do)."""
        self.client.drop_collection(self.collection)
