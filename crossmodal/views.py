"""Test-time image views: an image encoded as the mean of several views' outputs.

* ``plain``: the transformed image itself (one CNN pass);
* ``flip``: plain and mirrored (two passes);
* ``crops``: the four corners and the centre of the image enlarged 1.15 times
  (five passes): on Flickr8k it lifted the default's 64-bit R@10 by 1.3 image→text
  and 0.1 text→image, and R@10 at 32 and 128 bits by 0.6-2.4 (BENCHMARKS.md,
  "...: default+crops").

Views are made here from the normalised S x S tensor every path already has, so the
feature cache, photos through ONNX Runtime, and image queries all see the same views
of the same pixels (and so give an indexed photo and the same photo as a query the
same code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import IMAGE_VIEWS

CROP_ZOOM_PERCENT = 115  #: crops come from the image enlarged 1.15x (integer maths: exportable to ONNX)
_COUNTS = {"plain": 1, "flip": 2, "crops": 5}
assert set(_COUNTS) == set(IMAGE_VIEWS)


def view_count(views: str) -> int:
    return _COUNTS[views]


def make_views(pixels: torch.Tensor, views: str) -> torch.Tensor:
    """[B, 3, S, S] -> [V * B, 3, S, S], view-major: view v of image b is row v * B + b."""
    if views == "plain":
        return pixels
    if views == "flip":
        return torch.cat([pixels, torch.flip(pixels, dims=[3])])
    s = pixels.shape[-1]
    big = (s * CROP_ZOOM_PERCENT + 50) // 100
    up = F.interpolate(pixels, size=(big, big), mode="bilinear", align_corners=False)
    o, c = big - s, (big - s) // 2
    return torch.cat([up[..., :s, :s], up[..., :s, o:], up[..., o:, :s], up[..., o:, o:], up[..., c:c + s, c:c + s]])


def mean_over_views(outputs: torch.Tensor, views: str) -> torch.Tensor:
    """[V * B, ...] outputs of :func:`make_views`' rows -> [B, ...], the mean over views."""
    n = view_count(views)
    return outputs if n == 1 else outputs.reshape(n, -1, *outputs.shape[1:]).mean(0)
