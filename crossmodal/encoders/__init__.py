"""Encoders chosen by name from a registry (after torchvision's ``register_model``).

``create_image_encoder(cfg)`` and ``create_text_encoder(cfg)`` are the only entry
points; new encoders register a factory with ``@register_image_encoder("name")``
(``registry.py``, a leaf without torch, so names are listed and checked without it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import ImageEncoderConfig, TextEncoderConfig, parse_trainable
from .registry import (check_image_encoder_name, describe_encoders, image_factory, list_image_encoders,
                       list_text_encoders, register_image_encoder, register_text_encoder, text_factory)

if TYPE_CHECKING:  # the encoder modules import torch; the registry must not
    from .base import Encoder, TextEncoder
    from .image import ImageEncoder


def create_image_encoder(cfg: ImageEncoderConfig) -> ImageEncoder:
    check_image_encoder_name(cfg.name)
    if "+" in cfg.name:
        from .image import create_concat_encoder

        enc = create_concat_encoder(cfg, lambda part: image_factory(part.name)(part))
    else:
        enc = image_factory(cfg.name)(cfg)
        enc.set_pooling(cfg.pooling)
    apply_trainable(enc, cfg.trainable)
    return enc


def create_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    enc = text_factory(cfg.name)(cfg)
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


_LAZY = {"Encoder": ".base", "TextEncoder": ".base", "ImageEncoder": ".image"}


def __getattr__(name: str):
    """The encoder classes load with torch on first use: names and checks above do not need it."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Encoder", "ImageEncoder", "TextEncoder", "create_image_encoder", "create_text_encoder",
           "apply_trainable", "register_image_encoder", "register_text_encoder", "describe_encoders",
           "check_image_encoder_name", "list_image_encoders", "list_text_encoders"]
