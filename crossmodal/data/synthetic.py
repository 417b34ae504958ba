"""The built-in dataset: rendered scenes of coloured shapes with varied captions.

Nothing is downloaded: every image is drawn with Pillow from a seed, so the same seed
gives the same dataset on any machine. Each scene is one coloured shape of varied
size and position on a plain background; captions describe it in several phrasings
("a large red circle on the left", "a red circle on a grey background", ...). The label
is the shape's colour and kind ("red circle", 24 classes), so label-based mAP asks for
the right object, and pair-based recall asks for the exact scene (size, place, background).
"""
from __future__ import annotations

import io
import random
from typing import Iterator

from PIL import Image, ImageDraw

# Six colours far apart in RGB, so a frozen ImageNet CNN can tell them apart.
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 230), "yellow": (240, 220, 20),
           "magenta": (230, 40, 220), "cyan": (20, 200, 210)}
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = {"white": (245, 245, 245), "grey": (150, 150, 150), "black": (25, 25, 25)}
BIG = ("large", "big")
SMALL = ("small", "little", "tiny")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    import math

    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    return None


def _draw(d: ImageDraw.ImageDraw, shape: str, colour, cx, cy, r) -> None:
    poly = _polygon(shape, cx, cy, r)
    if poly is None:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon(poly, fill=colour)


def render_scene(rng: random.Random, size: int = 96) -> tuple[Image.Image, list[str], list[str]]:
    """One scene: image, captions, labels.

    A coloured shape of a random size and position on a plain background. Frozen
    ImageNet CNNs and sentence encoders both bind colour to shape poorly when a scene
    holds several objects, so the built-in set keeps one labelled object per scene and
    varies everything else (size, position, background, phrasing)."""
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    bg = rng.choice(list(BACKGROUNDS))
    large = rng.random() < 0.5
    r = size * (rng.uniform(0.26, 0.34) if large else rng.uniform(0.12, 0.18))
    horizontal = rng.choice(("left", "centre", "right"))
    cx = {"left": 0.3, "centre": 0.5, "right": 0.7}[horizontal] * size + rng.uniform(-0.04, 0.04) * size
    cy = size * rng.uniform(0.35, 0.65)
    img = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    _draw(ImageDraw.Draw(img), shape, COLOURS[colour], cx, cy, r)
    adj = rng.choice(BIG if large else SMALL)
    where = {"left": "on the left", "centre": "in the middle", "right": "on the right"}[horizontal]
    captions = [
        f"a {adj} {colour} {shape} {where}",
        f"a {colour} {shape} on a {bg} background",
        f"{adj} {colour} {shape} {where} of the picture",
        f"there is a {colour} {shape} {where} against {bg}",
        f"a picture of a {adj} {shape} coloured {colour}",
    ]
    rng.shuffle(captions)
    return img, captions, [f"{colour} {shape}"]


def generate_records(n: int, seed: int = 0, size: int = 96, captions_per_image: int = 5) -> Iterator[dict]:
    """Records in the readers' format (image as PNG bytes), deterministic from ``seed``."""
    rng = random.Random(seed)
    for i in range(n):
        img, caps, labels = render_scene(rng, size)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        yield {"id": f"shape-{seed}-{i:06d}", "image": buf.getvalue(), "captions": caps[:captions_per_image],
               "labels": labels}


def synthetic_splits(train: int = 3000, dev: int = 500, test: int = 1000, seed: int = 0, size: int = 96,
                     captions_per_image: int = 5) -> dict[str, Iterator[dict]]:
    """Independent seeded streams per split (so sizes can change without reshuffling others)."""
    return {name: generate_records(n, seed=seed * 1000 + k, size=size, captions_per_image=captions_per_image)
            for k, (name, n) in enumerate((("train", train), ("dev", dev), ("test", test)))}
