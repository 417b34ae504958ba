"""crossmodal: cross-modal image-text retrieval with deep hashing.

The model library: configs, encoders, hash heads, quantizers, the twin model, data
readers and bit packing. It never imports ``training`` or ``retrieval``.

The names below load on first use (PEP 562), so that ``import crossmodal`` and the
command line's ``--help`` never pay for torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "CrossModalHasher": "crossmodal.model", "create_model": "crossmodal.model", "load_model": "crossmodal.model",
    "ModelConfig": "crossmodal.config", "ImageEncoderConfig": "crossmodal.config",
    "TextEncoderConfig": "crossmodal.config", "HeadConfig": "crossmodal.config",
    "pack_bits": "crossmodal.codes", "unpack_bits": "crossmodal.codes", "hamming_distances": "crossmodal.codes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
