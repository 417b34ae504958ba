"""The metadata store beside the binary indexes: one SQLite table of items.

Rows: id (int64, stable), modality, key (the item's natural key: image id, caption id,
'video@frame'), source (image path or caption text or video path), labels (JSON list),
video and timestamp (frames), extra (free JSON). Held in memory while an index is open
and written with SQLite's backup API when the index is saved.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    modality TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT,
    labels TEXT,
    video TEXT,
    timestamp REAL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS items_modality ON items(modality);
CREATE INDEX IF NOT EXISTS items_video ON items(video);
"""


def item_id(modality: str, key: str) -> int:
    """A stable 63-bit id from (modality, key): the same item always gets the same id.
    A file name that is not UTF-8 (``os.fsdecode`` keeps its bytes as surrogates) hashes
    by those bytes."""
    data = f"{modality}\0{key}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & ((1 << 63) - 1)


def to_db(text: str | None):
    """A key, path or caption as SQLite stores it: text, or the raw bytes (a BLOB) of a
    file name that is not valid UTF-8, so any name the OS lists is kept losslessly."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def from_db(value) -> str | None:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def display_text(text: str | None) -> str | None:
    """A name for people and JSON pages: undecodable bytes shown as U+FFFD."""
    return None if text is None else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class Item:
    key: str
    source: str | None = None
    labels: list[str] = field(default_factory=list)
    video: str | None = None
    timestamp: float | None = None
    extra: dict = field(default_factory=dict)


class MetadataStore:
    def __init__(self, path: str | None = None):
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        if path is not None:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            src.backup(self.db)
            src.close()
        self.db.executescript(SCHEMA)

    def save(self, path: str) -> None:
        dst = sqlite3.connect(str(path))
        self.db.backup(dst)
        dst.close()

    def existing(self, ids: Sequence[int]) -> set[int]:
        out: set[int] = set()
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 900):
            chunk = ids[s:s + 900]
            q = f"SELECT id FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            out.update(r[0] for r in self.db.execute(q, chunk))
        return out

    def upsert(self, modality: str, ids: Sequence[int], items: Iterable[Item]) -> None:
        rows = [(int(i), modality, to_db(it.key), to_db(it.source), json.dumps(it.labels), to_db(it.video),
                 it.timestamp, json.dumps(it.extra)) for i, it in zip(ids, items)]
        self.db.executemany("INSERT OR REPLACE INTO items (id, modality, key, source, labels, video, timestamp, extra)"
                            " VALUES (?,?,?,?,?,?,?,?)", rows)
        self.db.commit()

    def delete(self, ids: Sequence[int]) -> None:
        self.db.executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])
        self.db.commit()

    def get(self, ids: Sequence[int]) -> dict[int, dict]:
        out = {}
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 900):
            chunk = ids[s:s + 900]
            q = (f"SELECT id, modality, key, source, labels, video, timestamp, extra FROM items "
                 f"WHERE id IN ({','.join('?' * len(chunk))})")
            for r in self.db.execute(q, chunk):
                out[r[0]] = {"id": r[0], "modality": r[1], "key": from_db(r[2]), "source": from_db(r[3]),
                             "labels": json.loads(r[4] or "[]"), "video": from_db(r[5]), "timestamp": r[6],
                             "extra": json.loads(r[7] or "{}")}
        return out

    def items_of(self, modality: str) -> Iterator[dict]:
        """Every item of a modality: ``{"id", "key", "source", "extra"}``."""
        for r in self.db.execute("SELECT id, key, source, extra FROM items WHERE modality = ?", (modality,)):
            yield {"id": r[0], "key": from_db(r[1]), "source": from_db(r[2]), "extra": json.loads(r[3] or "{}")}

    def filter_rows(self, modality: str) -> Iterator[tuple[int, str | None, str | None]]:
        """(id, path, date) of every item of a modality, for :class:`retrieval.filters.FilterColumns`:
        the path is an image's file or a frame's video (``source``), the date ``extra["date"]``."""
        q = "SELECT id, source, json_extract(extra, '$.date') FROM items WHERE modality = ?"
        for r in self.db.execute(q, (modality,)):
            yield r[0], from_db(r[1]), r[2] if isinstance(r[2], str) else None

    def count(self, modality: str | None = None) -> int:
        if modality is None:
            return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM items WHERE modality = ?", (modality,)).fetchone()[0]

    def videos(self) -> list[str]:
        return [from_db(r[0]) for r in
                self.db.execute("SELECT DISTINCT video FROM items WHERE video IS NOT NULL ORDER BY video")]

    def frames_of(self, video: str) -> list[dict]:
        rows = self.db.execute("SELECT id FROM items WHERE video = ? AND modality = 'frame' ORDER BY timestamp",
                               (to_db(video),)).fetchall()
        got = self.get([r[0] for r in rows])
        return [got[r[0]] for r in rows]
