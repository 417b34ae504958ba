"""The Milvus backend: the same interface as ``FaissBinaryIndex``, on a Milvus collection
with a BINARY_VECTOR field and the HAMMING metric.

``uri`` is a local file (Milvus Lite, ``milvus-lite==2.5.1``: BIN_FLAT) or a Milvus
server address such as ``http://host:19530`` (BIN_FLAT or BIN_IVF_FLAT). pymilvus is
imported only when this backend is used. Equal distances come back sorted by insertion
order, as in the faiss flat backend; at the cut-off Milvus picks which tied items to keep.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.errors import InvalidInput, Unavailable

MILVUS_INDEX_TYPES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}


class MilvusBinaryIndex:
    def __init__(self, nbits: int, collection: str, uri: str | None, index_type: str = "flat",
                 params: dict | None = None):
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise Unavailable("the Milvus backend needs pymilvus (and milvus-lite for a local file): "
                               "pip install 'crossmodal[milvus]'") from None
        if uri is None:
            raise InvalidInput("the Milvus backend needs --milvus-uri (a local .db file or http://host:19530)")
        if index_type not in MILVUS_INDEX_TYPES:
            raise InvalidInput(f"Milvus offers index types {sorted(MILVUS_INDEX_TYPES)}, not {index_type!r}")
        self.nbits, self.collection, self.uri, self.kind = nbits, collection, uri, index_type
        self.params = {"nlist": 1024, "nprobe": 16, **(params or {})} if index_type == "ivf" else {}
        self.client = MilvusClient(uri)
        if not self.client.has_collection(collection):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=nbits)
            ip = self.client.prepare_index_params()
            extra = {"nlist": int(self.params["nlist"])} if index_type == "ivf" else {}
            ip.add_index(field_name="code", index_type=MILVUS_INDEX_TYPES[index_type], metric_type="HAMMING",
                         params=extra)
            self.client.create_collection(collection, schema=schema, index_params=ip)
        self.client.load_collection(collection)
        self._seq = self.ntotal

    @classmethod
    def create(cls, nbits: int, modality: str, kind: str, params: dict, uri: str | None = None) -> "MilvusBinaryIndex":
        return cls(nbits, collection=f"crossmodal_{modality}", uri=uri, index_type=kind, params=params)

    @classmethod
    def read_from(cls, folder: Path, modality: str, nbits: int, kind: str, params: dict,
                  uri: str | None = None) -> "MilvusBinaryIndex":
        return cls.create(nbits, modality, kind, params, uri)  # the codes live on the server

    def write_into(self, folder: Path, modality: str) -> None:
        """Nothing to write: Milvus persists its collections itself."""

    @property
    def ntotal(self) -> int:
        stats = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(stats[0]["count(*)"])

    def add(self, ids, codes) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        rows = [{"id": int(i), "seq": self._seq + n, "code": c.tobytes()} for n, (i, c) in enumerate(zip(ids, codes))]
        for s in range(0, len(rows), 10000):
            self.client.insert(self.collection, rows[s:s + 10000])
        self._seq += len(rows)

    def remove(self, ids) -> int:
        res = self.client.delete(self.collection, ids=[int(i) for i in ids])
        return int(res.get("delete_count", len(ids))) if isinstance(res, dict) else len(ids)

    def _search(self, codes, limit: int, radius: int | None):
        params: dict = {"metric_type": "HAMMING", "params": {}}
        if self.kind == "ivf":
            params["params"]["nprobe"] = int(self.params["nprobe"])
        if radius is not None:
            params["params"].update({"radius": int(radius) + 1, "range_filter": -1})  # d < radius + 1
        res = self.client.search(self.collection, data=[c.tobytes() for c in codes], anns_field="code",
                                 limit=limit, search_params=params, output_fields=["seq"])
        out = []
        for hits in res:
            rows = sorted(((int(h["distance"]), int(h["entity"]["seq"]), int(h["id"])) for h in hits))
            out.append((np.array([r[0] for r in rows], np.int32), np.array([r[2] for r in rows], np.int64)))
        return out

    def search(self, codes, k: int):
        codes = np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8))
        D = np.full((len(codes), k), -1, np.int32)
        I = np.full((len(codes), k), -1, np.int64)
        for q, (d, i) in enumerate(self._search(codes, k, None)):
            D[q, :len(d)], I[q, :len(i)] = d, i
        return D, I

    def range_search(self, codes, radius: int, limit: int = 16384):
        return self._search(np.atleast_2d(np.ascontiguousarray(codes, dtype=np.uint8)), limit, radius)

    def memory_bytes(self) -> int:
        return self.ntotal * (self.nbits // 8 + 16)
