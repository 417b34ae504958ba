"""Image decoding with a pixel budget: the one way every part of crossmodal opens images.

* The size is read from the header and checked against ``max_pixels`` **before** any
  pixel is decoded, so a small file that decompresses to hundreds of megapixels (a
  "pixel bomb") costs nothing. The default is 40 MP, or ``CROSSMODAL_MAX_PIXELS``.
* A JPEG that is much larger than needed is decoded reduced (Pillow's ``Image.draft``,
  the DCT scales 1/2, 1/4, 1/8), never below ``min_side`` on its shorter side: a
  12-MP photo for a 224-pixel encoder decodes in a tenth of the time and memory.
* EXIF orientation is applied, so a portrait photo from a phone is upright.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import InvalidInput

DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels_default() -> int:
    from ..settings import env_number

    return env_number("CROSSMODAL_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def open_cell(cell, min_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """A prepared dataset's image cell (a decoded PIL image, or ``datasets``' undecoded
    ``{'bytes', 'path'}``) -> upright RGB image, through :func:`open_image`."""
    if isinstance(cell, Image.Image):
        return cell.convert("RGB")
    return open_image(cell.get("bytes") or cell["path"], min_side=min_side, max_pixels=max_pixels)


class ImageTooLarge(InvalidInput):
    """The header announces more pixels than the limit allows."""


def open_image(source: str | os.PathLike | bytes | Image.Image, min_side: int | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (a path, encoded bytes, or a PIL image) to an upright RGB image.

    ``min_side``: decode a JPEG reduced, keeping its shorter side ≥ ``min_side``.
    Raises :class:`ImageTooLarge` over ``max_pixels``; Pillow's own errors for files
    that are not images or are truncated (callers count and skip those)."""
    if isinstance(source, Image.Image):
        img = source
    else:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(Path(source), "rb")
        limit = max_pixels if max_pixels is not None else max_pixels_default()
        try:
            with warnings.catch_warnings():  # our limit below replaces Pillow's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    img = Image.open(stream)
                except Image.DecompressionBombError:  # Pillow's own, far larger limit: name ours, once
                    raise ImageTooLarge(f"image exceeds the limit of {limit / 1e6:.0f} MP (raise it with "
                                        f"CROSSMODAL_MAX_PIXELS)") from None
            w, h = img.size
            if w * h > limit:
                raise ImageTooLarge(f"image of {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of "
                                    f"{limit / 1e6:.0f} MP (raise it with CROSSMODAL_MAX_PIXELS)")
            if min_side and img.format == "JPEG" and min(w, h) >= 2 * min_side:
                scale = min(w, h) / min_side  # draft picks the largest reduction that keeps >= the request
                img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
            img.load()
        finally:
            stream.close()
    img = ImageOps.exif_transpose(img)
    return img if img.mode == "RGB" else img.convert("RGB")


#: EXIF tags: the Exif sub-IFD, and the moment the picture was taken within it
_EXIF_IFD, _DATE_TIME_ORIGINAL = 0x8769, 36867


def photo_date(path: str | os.PathLike, mtime_ns: int) -> tuple[str, str]:
    """When a photo was taken, as a naive ISO date-time, and where that came from:
    ``("2023-07-14T10:22:03", "exif")`` from EXIF DateTimeOriginal (the camera's clock,
    no time zone), else the file's modification time in this machine's local time
    (``"mtime"``). Reads the header only, never the pixels."""
    import datetime as dt

    try:
        with Image.open(path) as im:
            raw = im.getexif().get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL)
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        if isinstance(raw, str) and raw.strip():
            taken = dt.datetime.strptime(raw.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
            return taken.isoformat(), "exif"
    except Exception:  # no EXIF, a damaged or blank tag ("0000:00:00 00:00:00"): the file's time
        pass
    return dt.datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat(), "mtime"


def look_hash(img: Image.Image) -> str:
    """A 64-bit difference hash (dHash) of how an image looks, as 16 hex digits: the
    sign of each horizontal brightness step on a 9x8 grey thumbnail. Copies of one photo
    (re-saved, resized) keep it within a few bits whatever the model thinks they show;
    two photos of the same kind of scene, which the model's outputs cannot tell apart,
    do not. Near-duplicate search confirms its pairs with it."""
    import numpy as np

    small = np.asarray(img.convert("L").resize((9, 8), Image.BILINEAR, reducing_gap=2.0), dtype=np.int16)
    return np.packbits((small[:, 1:] > small[:, :-1]).ravel()).tobytes().hex()


def look_distance(a: str, b: str) -> int:
    """Bits that differ between two :func:`look_hash` values."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
