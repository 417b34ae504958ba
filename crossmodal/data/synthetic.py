"""The built-in dataset: rendered scenes of coloured shapes with varied captions.

Nothing is downloaded: every image is drawn with Pillow from a seed, so the same seed
gives the same dataset on any machine. Each scene has a large main shape and a small
second shape; captions describe them in several phrasings ("a large red circle left of
a small blue square", "small blue square to the right of a big red circle", ...). The
label is the main shape's colour and kind ("red circle"), so label-based mAP asks
for the right main object, and pair-based recall asks for the exact scene.
"""
from __future__ import annotations

import io
import random
from typing import Iterator

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 205, 30),
           "purple": (140, 60, 180), "orange": (245, 140, 20)}
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
    """One scene: image, captions, labels."""
    c1, c2 = rng.sample(list(COLOURS), 2)
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    bg = rng.choice(list(BACKGROUNDS))
    if bg == "black" and c1 == "purple":
        bg = "white"
    main_left = rng.random() < 0.5
    img = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    d = ImageDraw.Draw(img)
    jitter = lambda: rng.uniform(-0.05, 0.05) * size  # noqa: E731
    big_r, small_r = size * rng.uniform(0.2, 0.26), size * rng.uniform(0.08, 0.12)
    x_main, x_other = (0.3, 0.75) if main_left else (0.7, 0.25)
    _draw(d, s1, COLOURS[c1], x_main * size + jitter(), size * 0.5 + jitter(), big_r)
    _draw(d, s2, COLOURS[c2], x_other * size + jitter(), size * rng.uniform(0.3, 0.7), small_r)
    big, small = rng.choice(BIG), rng.choice(SMALL)
    side, other_side = ("left", "right") if main_left else ("right", "left")
    rel = "left of" if main_left else "right of"
    inv = "right of" if main_left else "left of"
    captions = [
        f"a {big} {c1} {s1} {rel} a {small} {c2} {s2}",
        f"{small} {c2} {s2} to the {inv.split()[0]} of a {big} {c1} {s1}",
        f"a {c1} {s1} on the {side} and a {c2} {s2} on the {other_side}",
        f"{c1} {s1} and {c2} {s2} on a {bg} background",
        f"there is a {big} {c1} {s1} next to a {small} {c2} {s2}",
    ]
    rng.shuffle(captions)
    return img, captions, [f"{c1} {s1}"]


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
