"""Encoders chosen by name from a registry (after torchvision's ``register_model``).

``create_image_encoder(cfg)`` and ``create_text_encoder(cfg)`` are the only entry
points; new encoders register a factory with ``@register_image_encoder("name")``.
"""
from __future__ import annotations

from typing import Callable

from ..config import ImageEncoderConfig, TextEncoderConfig, parse_trainable
from ..errors import InvalidInput
from .base import Encoder, TextEncoder

_IMAGE: dict[str, Callable[[ImageEncoderConfig], "ImageEncoder"]] = {}
_TEXT: dict[str, Callable[[TextEncoderConfig], TextEncoder]] = {}
#: how each encoder gets its weights, shown by ``--help`` ("bundled, offline", "needs a download", ...)
_NOTES: dict[tuple[str, str], str] = {}


def register_image_encoder(name: str, note: str = ""):
    def wrap(fn):
        if name in _IMAGE:
            raise ValueError(f"image encoder {name!r} registered twice")
        _IMAGE[name] = fn
        _NOTES["image", name] = note
        return fn
    return wrap


def register_text_encoder(name: str, note: str = ""):
    def wrap(fn):
        if name in _TEXT:
            raise ValueError(f"text encoder {name!r} registered twice")
        _TEXT[name] = fn
        _NOTES["text", name] = note
        return fn
    return wrap


def list_image_encoders() -> list[str]:
    return sorted(_IMAGE)


def list_text_encoders() -> list[str]:
    return sorted(_TEXT)


def describe_encoders(kind: str) -> dict[str, str]:
    """``{name: how it gets its weights}`` for ``kind`` 'image' or 'text'."""
    names = list_image_encoders() if kind == "image" else list_text_encoders()
    return {n: _NOTES.get((kind, n), "") for n in names}


def check_image_encoder_name(name: str) -> str:
    """A registered name, or registered names joined by ``+`` (their features concatenated)."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in _IMAGE]
    if unknown or len(set(parts)) != len(parts):
        what = f"unknown image encoder {unknown[0]!r}" if unknown else f"{name!r} names an encoder twice"
        raise InvalidInput(f"{what}; registered: {', '.join(list_image_encoders())} "
                           f"(join several with '+' to concatenate their features)")
    return name


def create_image_encoder(cfg: ImageEncoderConfig) -> "ImageEncoder":
    check_image_encoder_name(cfg.name)
    if "+" in cfg.name:
        from .image import create_concat_encoder

        enc = create_concat_encoder(cfg, lambda part: _IMAGE[part.name](part))
    else:
        enc = _IMAGE[cfg.name](cfg)
        enc.set_pooling(cfg.pooling)
    apply_trainable(enc, cfg.trainable)
    return enc


def create_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    # Any name that is not registered is taken as a transformers model name or folder.
    factory = _TEXT.get(cfg.name, _TEXT["transformers"])
    enc = factory(cfg)
    apply_trainable(enc, cfg.trainable)
    return enc


def apply_trainable(encoder: Encoder, spec: str) -> None:
    """Freeze an encoder, or unfreeze all of it or its last N blocks.

    Every encoder exposes ``blocks()``: its layers from input to output, so "last N"
    means the same thing for a CNN (stages) and a transformer (layers).
    Encoders trained from scratch (``always_trainable``) ignore ``frozen``.
    """
    mode, n = parse_trainable(spec)
    if encoder.always_trainable:
        mode = "full"
    for p in encoder.parameters():
        p.requires_grad = mode == "full"
    if mode == "last" and n > 0:
        for block in encoder.blocks()[-n:]:
            for p in block.parameters():
                p.requires_grad = True
    for p in encoder.new_parameters():
        p.requires_grad = True  # starts from scratch (a learned pool): always trains
    encoder.is_frozen = not any(p.requires_grad for p in encoder.parameters())


from . import image, text  # noqa: E402,F401  (registers the built-in encoders)
from .image import ImageEncoder  # noqa: E402

__all__ = ["Encoder", "ImageEncoder", "TextEncoder", "create_image_encoder", "create_text_encoder",
           "apply_trainable", "register_image_encoder", "register_text_encoder", "describe_encoders"]
