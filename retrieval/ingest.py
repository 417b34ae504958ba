"""Prepared datasets and captions as items with their outputs, ready for the index writer.

Embedding is the slow part and runs outside any lock; the items then go to
:func:`retrieval.index.write_index` (photo folders come through :mod:`retrieval.photos`,
videos through :mod:`retrieval.video`, to the same writer), which takes the folder's
writer lock, applies them to the newest version and writes the next one. Two writers
(two commands, or a server and a command) therefore never lose each other's items, and
each sees the other's items as "already present" rather than overwriting them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .index import IndexChanges, NewIndex, WriteReport, write_index
from .store import Item


def dataset_items(data_dir: str | os.PathLike, split: str, flat, rows=None) -> tuple[list[Item], list[Item]]:
    """Index items of a prepared split: images keyed by item id, captions by their caption
    id ('<id>#<n>'). ``rows``: each item's row in the dataset as stored (screening may
    have dropped some), kept so a result can be traced back to its dataset row."""
    root = str(Path(data_dir).resolve())
    rows = range(len(flat.ids)) if rows is None else rows
    images = [Item(key=i, source=i, labels=list(flat.labels[n]),
                   extra={"dataset": root, "split": split, "row": int(rows[n])})
              for n, i in enumerate(flat.ids)]
    texts = [Item(key=cid, source=cap, labels=list(flat.labels[owner]),
                  extra={"image_key": flat.ids[owner], "dataset": root, "split": split})
             for cid, cap, owner in zip(flat.caption_ids(), flat.captions, flat.caption_item.tolist())]
    return images, texts


def embed_prepared(model, data_dir: str | os.PathLike, splits: Sequence[str], cache_dir: Path | None,
                   update: bool = False) -> tuple[IndexChanges, dict]:
    """The image and caption items of prepared splits with their outputs, as additions
    (replacing items already there with ``update``), screened (unusable rows are skipped);
    returned with the per-split screening for the caller to report."""
    from crossmodal.data.prepared import PreparedSplits

    data = PreparedSplits.open(data_dir, splits, cache_dir)
    changes = IndexChanges()
    for split in splits:
        out = data.outputs(model, split)
        img_items, txt_items = dataset_items(data_dir, split, data.flat(split), data.rows(split))
        changes.add("image", img_items, out.image_relaxed, update).add("text", txt_items, out.text_relaxed, update)
    return changes, data.screening


def new_index(model, model_dir: str | os.PathLike, nbits: int, index_type: str = "flat",
              params: dict | None = None, backend: str = "faiss", backend_options: dict | None = None,
              rerank: str | None = "int8", build_inputs: dict | None = None,
              rerank_candidates: int | None = None) -> NewIndex:
    """How ``index build`` creates an index. ``rerank``: how it keeps every item's
    outputs for two-stage search (``int8`` or ``float16``), or None for codes alone;
    ``rerank_candidates``: how many Hamming candidates a query re-ranks by default (None:
    the default for the code length)."""
    from crossmodal.errors import InvalidInput

    if nbits not in model.config.bits:
        raise InvalidInput(f"--bits {nbits}: this model serves code lengths {list(model.config.bits)}")
    return NewIndex(nbits, index_type, dict(params or {}), backend, dict(backend_options or {}), rerank,
                    rerank_candidates, model_reference(model_dir), build_inputs)


def build_index(model, model_dir: str | os.PathLike, changes: IndexChanges, out: str | os.PathLike,
                nbits: int, **spec) -> WriteReport:
    """A new index of ``changes`` (additions) written to ``out`` as its next version (replacing
    any index there: the caller refused ``out`` if it should not be replaced, with
    :func:`~retrieval.index.check_index_destination`, before embedding). ``spec``: the
    rest of :func:`new_index`."""
    return write_index(out, model, changes, create=new_index(model, model_dir, nbits, **spec),
                       replace=True)


def model_reference(model_dir: str | os.PathLike | None) -> str:
    """How an index records its model: ``default`` for the bundled one (so an index
    names it across installs and releases), else the folder's absolute path."""
    from crossmodal.pretrained import DEFAULT_MODEL, is_default

    return DEFAULT_MODEL if is_default(model_dir) else str(Path(model_dir).resolve())


def text_items(texts: Sequence[str]) -> list[Item]:
    """Free captions, keyed by their text."""
    return [Item(key=t, source=t) for t in texts]


def embed_texts(model, texts: Sequence[str], update: bool = False) -> IndexChanges:
    """Free captions with their outputs, as additions."""
    return IndexChanges().add("text", text_items(texts), model.embed_texts(list(texts)), update)
