"""The ingest path: embed -> quantize -> add, and the commit that makes it durable.

Embedding is the slow part and runs outside any lock; :func:`commit` then takes the
index folder's writer lock, loads the newest version, adds, and writes the next version
(only if something was added or replaced). Two writers (two commands, or a server and
a command) therefore never lose each other's items, and each sees the other's items as
"already present" rather than overwriting them.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.data import open_image_checked

from .index import CrossModalIndex
from .store import Item


@dataclass
class Pending:
    """Items of one modality with their continuous outputs, ready to be added."""
    modality: str
    items: list[Item]
    relaxed: np.ndarray


@dataclass
class IngestReport:
    added: int = 0
    skipped: int = 0  #: already present (same modality and key)
    failed: list[str] = field(default_factory=list)  #: inputs that could not be read

    def summary(self) -> str:
        return f"added {self.added}, already present {self.skipped}, unreadable {len(self.failed)}"


def add_pending(index: CrossModalIndex, model, pending: Sequence[Pending], store_floats: bool = False,
                update: bool = False, report: IngestReport | None = None) -> IngestReport:
    """Quantize and add to an index in memory (the caller saves it)."""
    report = report or IngestReport()
    for p in pending:
        if not p.items:
            continue
        res = index.add(p.modality, p.items, model.quantize(p.relaxed, index.nbits),
                        floats=p.relaxed if store_floats else None, update=update)
        report.added += res["added"]
        report.skipped += res["skipped"]
    return report


def commit(index_dir: str | os.PathLike, model, pending: Sequence[Pending], store_floats: bool = False,
           update: bool = False, report: IngestReport | None = None) -> IngestReport:
    """Add to the index in ``index_dir`` as one serialised, atomic write."""
    with CrossModalIndex.updating(index_dir, model.fingerprint()) as index:
        return add_pending(index, model, pending, store_floats, update, report)


def text_items(texts: Sequence[str]) -> list[Item]:
    """Free captions, keyed by their text."""
    return [Item(key=t, source=t) for t in texts]


def embed_texts(model, texts: Sequence[str]) -> Pending:
    return Pending("text", text_items(texts), model.embed_texts(list(texts)))


def embed_image_files(model, paths: Sequence[str | os.PathLike], report: IngestReport) -> Pending:
    """Image files keyed by their absolute path; unreadable ones are named on stderr and
    counted in ``report.failed``."""
    items, images = [], []
    min_side = model.image_encoder.image_size
    for path in paths:
        try:
            _, img = open_image_checked(path, min_side=min_side)
        except Exception as e:  # Pillow raises many types for bad files
            report.failed.append(str(path))
            print(f"skipped {path}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        key = str(Path(path).resolve())
        items.append(Item(key=key, source=key))
        images.append(img)
    relaxed = model.embed_images(images) if images else np.zeros((0, model.config.max_bits), np.float32)
    return Pending("image", items, relaxed)
