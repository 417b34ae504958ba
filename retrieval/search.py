"""Search in every direction through the model: text->image, image->text,
image->image, text->text, for raw queries (captions, PIL images) or packed codes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .index import CrossModalIndex, Hit, IndexMismatch


class Searcher:
    """A model and the index it built, ready to answer queries."""

    def __init__(self, model, index: CrossModalIndex):
        if model.fingerprint() != index.model_fingerprint:
            raise IndexMismatch(f"the index was built by model {index.model_fingerprint}, "
                                f"not by this model ({model.fingerprint()})")
        if index.nbits not in model.config.bits:
            raise IndexMismatch(f"the index holds {index.nbits}-bit codes; this model serves {list(model.config.bits)}")
        self.model, self.index = model, index

    @classmethod
    def open(cls, index_dir: str | Path, model_dir: str | Path | None = None) -> "Searcher":
        from crossmodal.model import CrossModalHasher

        index = CrossModalIndex.load(index_dir)
        model_dir = model_dir or index.model_path
        if not model_dir:
            raise ValueError(f"{index_dir} does not record its model's folder: pass --model DIR")
        model = CrossModalHasher.from_pretrained(model_dir)
        if model.fingerprint() != index.model_fingerprint:
            raise IndexMismatch(f"{index_dir} was built by model {index.model_fingerprint}, not by the model in "
                                f"{model_dir} ({model.fingerprint()}); rebuild the index with this model")
        return cls(model, index)

    def _run(self, relaxed: np.ndarray, target: str, k: int, radius: int | None, rerank: int) -> list[list[Hit]]:
        codes = self.model.quantize(relaxed, self.index.nbits)
        return self.index.search(codes, target, k=k, radius=radius, query_floats=relaxed, rerank=rerank)

    def search_texts(self, texts: Sequence[str], target: str = "image", k: int = 10, radius: int | None = None,
                     rerank: int = 0) -> list[list[Hit]]:
        """Captions as queries; ``target`` is 'image', 'text' or 'frame'."""
        return self._run(self.model.embed_texts(list(texts)), target, k, radius, rerank)

    def search_images(self, images: Sequence[Image.Image], target: str = "text", k: int = 10,
                      radius: int | None = None, rerank: int = 0) -> list[list[Hit]]:
        """Images as queries; ``target`` is 'text', 'image' or 'frame'."""
        return self._run(self.model.embed_images(images), target, k, radius, rerank)

    def search_codes(self, codes: np.ndarray, target: str, k: int = 10, radius: int | None = None) -> list[list[Hit]]:
        return self.index.search(codes, target, k=k, radius=radius)
