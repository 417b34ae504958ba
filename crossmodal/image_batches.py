"""The one batch image encoder: image sources -> decoded in worker processes -> a runtime
-> outputs, with a bounded number of decoded images in memory.

Photo files (:mod:`retrieval.photos`), a prepared split's image cells (the feature
cache, :mod:`crossmodal.features`) and images already in memory (video frames, image
queries: ``CrossModalHasher.embed_images``) all go through :func:`encode_batches`, so
parallel decoding, the memory bound and failure reporting are written once.

* **Sources** say how to open image ``i`` (:class:`ImageSources`); they are picklable,
  because DataLoader worker processes receive them.
* **Memory**: at most ``batch_size * (workers * PREFETCH + 1)`` decoded images exist at
  any time, whatever the number of sources.
* **Failures**: an image that cannot be decoded is reported with its position and why,
  and the batch goes on without it; the caller decides whether that is fatal (photos:
  skipped and counted; a screened dataset: an error).
* **Order**: batches come in source order, each the same rows whatever the worker count,
  so outputs (and cached features) do not depend on how many processes decoded them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from .data.images import look_hash, open_cell, open_image
from .progress import progress

#: batches each worker decodes ahead of the runtime
PREFETCH = 2


#: decoding processes for a prepared split's images (the feature cache). Zero: a dataset
#: image (Flickr8k: a 500x375 JPEG) decodes in milliseconds, a small share of what the CNNs
#: take, and on two cores a decoding process took more from the CNNs' runtime than it saved
#: (``benchmarks/bench_features.py``, BENCHMARKS.md "Feature extraction: decoding
#: workers"). Camera photos are the other way round and get most cores
#: (``retrieval.photo_options.default_workers``).
DATASET_WORKERS = 0


class ImageSources(Protocol):
    """Images to decode, by position. Picklable: DataLoader workers receive it."""

    def __len__(self) -> int: ...

    def open(self, i: int) -> tuple[Image.Image, str | None]:
        """Image ``i``, upright RGB, and a digest of its encoded bytes (None where there are none)."""
        ...


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class PhotoFiles:
    """Image files, each decoded reduced to no less than ``min_side`` (the encoder's size)
    and digested, so a photo whose mtime changed but whose content did not is known."""
    paths: Sequence[str]
    min_side: int

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> tuple[Image.Image, str]:
        data = Path(self.paths[i]).read_bytes()
        return open_image(data, min_side=self.min_side), content_hash(data)


class DatasetCells:
    """A prepared split's image column, decoded at full size (the feature cache's pixels:
    decoding reduced would change cached features, and so published numbers)."""

    def __init__(self, split):
        from datasets import Image as HFImage

        self.split = split.cast_column("image", HFImage(decode=False))  #: cells as {'bytes', 'path'}

    def __len__(self) -> int:
        return len(self.split)

    def open(self, i: int) -> tuple[Image.Image, None]:
        return open_cell(self.split[i]["image"]), None


@dataclass(frozen=True)
class InMemoryImages:
    """PIL images already decoded (video frames, queries): the transform only."""
    images: Sequence[Image.Image]

    def __len__(self) -> int:
        return len(self.images)

    def open(self, i: int) -> tuple[Image.Image, None]:
        return self.images[i], None


def decode_failure(e: Exception) -> str:
    """Why an image could not be decoded, in words (the caller names the file: Pillow's own
    message names an in-memory buffer, ``<_io.BytesIO object at 0x...>``)."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image file Pillow can read (damaged, or another kind of file with an image's name)"
    if isinstance(e, OSError) and "truncated" in str(e).lower():
        return "the image file is truncated (an interrupted copy?)"
    return f"{type(e).__name__}: {e}"


class _Decoding(torch.utils.data.Dataset):
    """Runs in a worker: position -> (position, pixels or None, digest, why it failed)."""

    def __init__(self, sources: ImageSources, transform: Callable[[Image.Image], torch.Tensor]):
        self.sources, self.transform = sources, transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int):
        try:
            img, digest = self.sources.open(i)
            return i, self.transform(img), (digest, look_hash(img)), None
        except Exception as e:  # Pillow raises many types for bad files; the batch goes on
            return i, None, None, decode_failure(e)


def _as_list(batch):
    return batch  # entries that failed have no pixels: no stacking here


@dataclass
class EncodedBatch:
    """One batch's result: the positions that decoded, their outputs (rows in the same
    order) and digests, and ``(position, why)`` for those that did not."""
    positions: list[int]
    outputs: np.ndarray | torch.Tensor
    digests: list[str | None]
    failed: list[tuple[int, str]] = field(default_factory=list)
    looks: list[str] = field(default_factory=list)  #: :func:`~crossmodal.data.images.look_hash` of each image


def decoded_pixels(sources: ImageSources, transform, positions: Sequence[int]) -> list[torch.Tensor | None]:
    """The pixels the runtime would be fed for ``positions`` (None where decoding fails),
    decoded in this process (what a test compares against)."""
    decoding = _Decoding(sources, transform)
    return [decoding[i][1] for i in positions]


def encode_batches(sources: ImageSources, transform: Callable[[Image.Image], torch.Tensor],
                   run: Callable[[torch.Tensor], np.ndarray | torch.Tensor], batch_size: int, workers: int = 0,
                   desc: str | None = None, unit: str = "image") -> Iterator[EncodedBatch]:
    """Decode ``sources`` (in ``workers`` processes; 0: in this one), transform, and pass
    each batch of pixels [B, 3, S, S] to ``run``; yields one :class:`EncodedBatch` per
    batch, in source order. ``desc``: show progress under that name."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    loader = torch.utils.data.DataLoader(_Decoding(sources, transform), batch_size=batch_size, num_workers=workers,
                                         collate_fn=_as_list, prefetch_factor=PREFETCH if workers else None,
                                         persistent_workers=False)
    batches = progress(loader, desc=desc, unit=unit, total=len(sources), size=len) if desc else loader
    for batch in batches:
        good = [(i, x, d) for i, x, d, why in batch if why is None]
        failed = [(i, why) for i, _, _, why in batch if why is not None]
        outputs = run(torch.stack([x for _, x, _ in good])) if good else None
        yield EncodedBatch([i for i, _, _ in good], outputs, [d[0] for _, _, d in good], failed,
                           [d[1] for _, _, d in good])
