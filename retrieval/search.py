"""Search in every direction through the model: text->image, image->text,
image->image, text->text, for raw queries (captions, PIL images) or packed codes.

A :class:`Searcher` opened from a folder follows that folder: :meth:`Searcher.refresh`
(one small read of ``CURRENT``) swaps in a version another process wrote, so a server
serves what a command line added a moment ago."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from crossmodal.errors import InvalidInput

from .index import CrossModalIndex, Hit, IndexMismatch, read_current_version

MAX_QUERY_CHARS = 500


def check_query_texts(texts: Sequence[str], max_chars: int = MAX_QUERY_CHARS) -> list[str]:
    """Captions used as queries or added as items: non-blank and at most ``max_chars``."""
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidInput("a text query or caption must not be empty or blank")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 on a command line, or a lone surrogate in JSON
            raise InvalidInput(f"the text {t.encode('utf-8', 'backslashreplace').decode('ascii', 'backslashreplace')!r} "
                               f"is not valid UTF-8 text (a stray byte or a lone surrogate); retype it in UTF-8") from None
        if len(t) > max_chars:
            raise InvalidInput(f"a text of {len(t)} characters is longer than the limit of {max_chars}")
    return texts


def check_model_fits(model, built_by: str, recorded_model: str | None, index_dir=None) -> None:
    """An index answers only through the model that built it: a different fingerprint is
    refused with what to do (for the bundled model: which release's default built it)."""
    from crossmodal.pretrained import DEFAULT_MODEL, model_card

    if model.fingerprint() == built_by:
        return
    where = f"{index_dir} was" if index_dir is not None else "the index was"
    if recorded_model == DEFAULT_MODEL:
        card = model_card()
        raise IndexMismatch(
            f"{where} built by an earlier release's default model ({built_by}); this release's default is "
            f"{card.get('name', 'another model')} ({model.fingerprint()}). Rebuild the index with this release "
            f"(crossmodal index build --images ... --out DIR --overwrite), or pass --model with a copy of the "
            f"model that built it")
    raise IndexMismatch(f"{where} built by model {built_by}, not by this model ({model.fingerprint()}); rebuild "
                        f"the index with this model, or search with the model that built it")


def image_query_target(index) -> str:
    """Where an image query looks when the user does not say: the captions, or the
    images when the index holds no caption (a photo library)."""
    return "text" if index.count("text") else "image"


class Searcher:
    """A model and the index it built, ready to answer queries."""

    def __init__(self, model, index: CrossModalIndex, index_dir: str | Path | None = None):
        """The one place a model and an index are checked to belong together."""
        check_model_fits(model, index.model_fingerprint, index.model_path, index_dir)
        if index.nbits not in model.config.bits:
            raise IndexMismatch(f"the index holds {index.nbits}-bit codes; this model serves {list(model.config.bits)}")
        self.model, self.index = model, index
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self._fingerprint = index.model_fingerprint
        self._reload = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path, model_dir: str | Path | None = None) -> "Searcher":
        """Open the index in ``index_dir`` with the model recorded in it (or ``model_dir``)."""
        from crossmodal.model import CrossModalHasher

        index = CrossModalIndex.load(index_dir)
        model_dir = model_dir or index.model_path
        if not model_dir:
            raise InvalidInput(f"{index_dir} does not record its model's folder: pass --model DIR")
        return cls(CrossModalHasher.from_pretrained(model_dir), index, index_dir)

    def refresh(self) -> bool:
        """Swap in the folder's newest version if another writer made one; True if so."""
        if self.index_dir is None or read_current_version(self.index_dir) == self.index.version:
            return False
        with self._reload:
            if read_current_version(self.index_dir) == self.index.version:
                return False
            self.index = CrossModalIndex.load(self.index_dir, self._fingerprint, self.index.nbits)
            return True

    def search_relaxed(self, relaxed: np.ndarray, target: str, k: int = 10, radius: int | None = None,
                       rerank: int | None = None) -> list[list[Hit]]:
        """The one query path: continuous outputs -> codes -> the index's Hamming
        candidates -> re-ranked by the outputs (``rerank``: candidates, default the
        index's own; 0 for Hamming order only). The CLI, the service and Python all come here."""
        codes = self.model.quantize(relaxed, self.index.nbits)
        return self.index.search(codes, target, k=k, radius=radius, query_floats=relaxed, rerank=rerank)

    def search_texts(self, texts: Sequence[str], target: str = "image", k: int = 10, radius: int | None = None,
                     rerank: int | None = None) -> list[list[Hit]]:
        """Captions as queries; ``target`` is 'image', 'text' or 'frame'."""
        return self.search_relaxed(self.model.embed_texts(check_query_texts(texts)), target, k, radius, rerank)

    def search_images(self, images: Sequence[Image.Image], target: str = "text", k: int = 10,
                      radius: int | None = None, rerank: int | None = None) -> list[list[Hit]]:
        """Images as queries; ``target`` is 'text', 'image' or 'frame'."""
        return self.search_relaxed(self.model.embed_images(images), target, k, radius, rerank)

    def search_codes(self, codes: np.ndarray, target: str, k: int = 10, radius: int | None = None) -> list[list[Hit]]:
        return self.index.search(codes, target, k=k, radius=radius)
