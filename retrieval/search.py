"""Search in every direction through the model: text->image, image->text,
image->image, text->text, for raw queries (captions, PIL images) or packed codes.

A :class:`Searcher` opened from a folder follows that folder: :meth:`Searcher.refresh`
(one small read of ``CURRENT``) swaps in a version another process wrote, so a server
serves what a command line added a moment ago."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from crossmodal.errors import InvalidInput

from .filters import SORTS, ItemFilter
from .index import CrossModalIndex, Hit, IndexMismatch, read_current_version
from .rerank import unit_rows

MAX_QUERY_CHARS = 500
#: how far an excluded concept pushes the query away (``--not``): the query's unit vector
#: minus this share of the excluded one's, chosen on Flickr8k dev (``benchmarks/bench_query_forms.py``)
DEFAULT_EXCLUDE_WEIGHT = 0.5
#: the image's share of a query that has both a text and an image (``--mix``)
DEFAULT_MIX = 0.5


def compose_query(text: np.ndarray | None = None, image: np.ndarray | None = None, mix: float = DEFAULT_MIX,
                  exclude: np.ndarray | None = None, exclude_weight: float = DEFAULT_EXCLUDE_WEIGHT) -> np.ndarray:
    """One query vector from a text's and/or an image's outputs, pushed away from
    excluded concepts: ``(1 - mix) * t + mix * i - exclude_weight * mean(e)``, every part a
    unit vector, so ``mix`` and the weight mean the same whatever the outputs' scale. Its
    code (signs) finds the Hamming candidates, and it re-ranks them, like any query."""
    if text is None and image is None:
        raise InvalidInput("a query needs a text, an image, or both")
    if not 0.0 <= mix <= 1.0:
        raise InvalidInput(f"--mix is the image's share of the query, from 0 to 1, not {mix}")
    if exclude_weight < 0:
        raise InvalidInput(f"the exclusion weight must be >= 0, not {exclude_weight}")
    parts = []
    if text is not None:
        parts.append((1.0 - mix if image is not None else 1.0, unit_rows(np.atleast_2d(text))[0]))
    if image is not None:
        parts.append((mix if text is not None else 1.0, unit_rows(np.atleast_2d(image))[0]))
    query = sum(w * v for w, v in parts)
    if exclude is not None and len(np.atleast_2d(exclude)):
        away = unit_rows(unit_rows(np.atleast_2d(exclude)).mean(axis=0, keepdims=True))[0]
        query = unit_rows(query[None])[0] - exclude_weight * away
    return np.asarray(query, np.float32)


@dataclass(frozen=True)
class ResultForm:
    """Which results a query keeps and in what order, beyond its vector: a filter on the
    items (folders, dates), a cut-off on the re-ranked score, and the order of the kept
    top k (by relevance, or newest first: the same items, reordered)."""
    where: ItemFilter = field(default_factory=ItemFilter)
    sort: str = "relevance"
    min_score: float | None = None

    def __post_init__(self):
        if self.sort not in SORTS:
            raise InvalidInput(f"unknown sort {self.sort!r}; one of {', '.join(SORTS)}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidInput(f"--min-score is a cosine, from -1 to 1, not {self.min_score}")

    def apply(self, hits: list[Hit]) -> list[Hit]:
        """The cut-off and the order, on one query's ranked hits."""
        if self.min_score is not None:
            if hits and all(h.score is None for h in hits):
                raise InvalidInput("--min-score cuts on the re-ranked score, and this search was not re-ranked "
                                   "(--rerank 0, or an index built with --rerank-store none): drop --min-score "
                                   "or re-rank")
            hits = [h for h in hits if h.score is not None and h.score >= self.min_score]
        if self.sort == "date":  # newest first; undated items after the dated ones, in relevance order
            hits = (sorted((h for h in hits if _date_of(h)), key=_date_of, reverse=True)  # stable: ties keep relevance
                    + [h for h in hits if not _date_of(h)])
        return hits


def _date_of(hit: Hit) -> str | None:
    return (hit.extra or {}).get("date")



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
                       rerank: int | None = None, form: ResultForm | None = None) -> list[list[Hit]]:
        """The one query path: continuous outputs -> codes -> the index's Hamming
        candidates (among the items ``form`` allows) -> re-ranked by the outputs
        (``rerank``: candidates, default the index's own; 0 for Hamming order only) ->
        ``form``'s cut-off and order. The CLI, the service and Python all come here."""
        form = form or ResultForm()
        codes = self.model.quantize(relaxed, self.index.nbits)
        found = self.index.search(codes, target, k=k, radius=radius, query_floats=relaxed, rerank=rerank,
                                  where=form.where)
        return [form.apply(hits) for hits in found]

    def query_vector(self, text: str | None = None, image: Image.Image | None = None, mix: float = DEFAULT_MIX,
                     exclude: Sequence[str] = (), exclude_weight: float = DEFAULT_EXCLUDE_WEIGHT) -> np.ndarray:
        """The outputs one query searches with: a text, an image or both (``mix``: the
        image's share), pushed away from the ``exclude`` texts (:func:`compose_query`)."""
        texts = check_query_texts(([text] if text is not None else []) + list(exclude))
        embedded = self.model.embed_texts(texts) if texts else None
        return compose_query(embedded[0] if text is not None else None,
                             self.model.embed_images([image])[0] if image is not None else None, mix,
                             embedded[1 if text is not None else 0:] if exclude else None, exclude_weight)

    def default_target(self, text: str | None, image: Image.Image | None) -> str:
        """What a query looks for unless told: images for a text (with or without an
        image), captions for an image alone (or images, in a photo library)."""
        return "image" if text is not None or image is None else image_query_target(self.index)

    def search(self, text: str | None = None, image: Image.Image | None = None, target: str | None = None,
               k: int = 10, mix: float = DEFAULT_MIX, exclude: Sequence[str] = (),
               exclude_weight: float = DEFAULT_EXCLUDE_WEIGHT, form: ResultForm | None = None,
               radius: int | None = None, rerank: int | None = None) -> list[Hit]:
        """One query in any form: "two dogs in the snow", a photo, or a photo and "but at
        night"; without "people" (``exclude``); within folders and dates, newest first,
        above a score (``form``). ``target`` defaults to images for a text query, and to
        captions (or images, in a photo library) for an image."""
        target = target or self.default_target(text, image)
        relaxed = self.query_vector(text, image, mix, exclude, exclude_weight)
        return self.search_relaxed(relaxed[None], target, k, radius, rerank, form)[0]

    def search_texts(self, texts: Sequence[str], target: str = "image", k: int = 10, radius: int | None = None,
                     rerank: int | None = None, form: ResultForm | None = None) -> list[list[Hit]]:
        """Captions as queries; ``target`` is 'image', 'text' or 'frame'."""
        return self.search_relaxed(self.model.embed_texts(check_query_texts(texts)), target, k, radius, rerank, form)

    def search_images(self, images: Sequence[Image.Image], target: str = "text", k: int = 10,
                      radius: int | None = None, rerank: int | None = None,
                      form: ResultForm | None = None) -> list[list[Hit]]:
        """Images as queries; ``target`` is 'text', 'image' or 'frame'."""
        return self.search_relaxed(self.model.embed_images(images), target, k, radius, rerank, form)

    def search_codes(self, codes: np.ndarray, target: str, k: int = 10, radius: int | None = None) -> list[list[Hit]]:
        return self.index.search(codes, target, k=k, radius=radius)
