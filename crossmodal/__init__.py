"""crossmodal: cross-modal image-text retrieval with deep hashing.

The model library: configs, encoders, hash heads, quantizers, the twin model, data
readers and bit packing. It never imports ``training`` or ``retrieval``.
"""
from .codes import hamming_distances, pack_bits, unpack_bits
from .config import HeadConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig
from .model import CrossModalHasher, create_model

__all__ = [
    "CrossModalHasher", "create_model", "ModelConfig", "ImageEncoderConfig", "TextEncoderConfig", "HeadConfig",
    "pack_bits", "unpack_bits", "hamming_distances",
]
__version__ = "0.1.0"
