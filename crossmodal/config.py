"""Typed configuration for a crossmodal model.

A model is fully described by a :class:`ModelConfig`; it is stored as ``config.json``
beside the weights so that ``from_pretrained`` can rebuild the exact same network.
Configs are plain data (like open_clip's JSON model configs): nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

DEFAULT_BITS: tuple[int, ...] = (16, 32, 64, 128)
#: Outputs of the hash heads when the config does not say: codes are prefixes of them, and
#: the loss trains every default length up to this width whatever lengths are served,
#: because the longer prefixes' terms teach the shorter ones (a head trained only up to
#: the served length scored lower at that length than one trained to 128).
DEFAULT_HEAD_WIDTH = 128


@dataclass
class ImageEncoderConfig:
    """Which CNN turns an image into a feature vector.

    ``weights``: ``"default"`` (the encoder's pretrained weights: bundled package or
    torchvision's weights enum), ``"none"`` (random init, train from scratch) or a path
    to a local ``.pth``/``.safetensors`` state dict.
    ``trainable``: ``"frozen"``, ``"full"`` or ``"last:N"`` (the last N blocks train).
    ``pooling``: how the last feature map becomes a vector: ``"mean"`` (global average),
    or ``"attention"`` (learned attention maps over positions on top of the mean; it
    trains even over a frozen backbone, from cached activations of the last stage's input).
    """

    #: three ImageNet CNNs side by side (their pooled features concatenated): on Flickr8k two
    #: (Lite0+Lite2) lift 64-bit R@10 by 4-5 points over Lite0 alone, and Lite1 as a third
    #: adds about 1 more at 64 and 128 bits (BENCHMARKS.md, quality II ablations)
    name: str = "efficientnet-lite0+efficientnet-lite1+efficientnet-lite2"
    weights: str = "default"
    trainable: str = "frozen"
    pooling: str = "mean"
    image_size: int | None = None
    channels_last: bool = True


POOLINGS = ("mean", "attention")
#: How an image becomes relaxed outputs: its plain view, or the mean of several views'
#: outputs (mirrored; five zoomed crops): more CNN work per new image (crossmodal.views).
IMAGE_VIEWS = ("plain", "flip", "crops")
#: How relaxed outputs become bits (``crossmodal.quantizers`` implements each)
QUANTIZER_NAMES = ("sign", "itq", "kmeans")
#: Where a frozen CNN runs for new images (``crossmodal.runtime``): ONNX Runtime when it
#: is installed and agrees with PyTorch on a probe batch (auto), PyTorch, ONNX only, or
#: OpenVINO in bfloat16 (faster on CPUs with AMX, not the exact codes: asked for by name).
RUNTIMES = ("auto", "torch", "onnx", "openvino-bf16")


@dataclass
class TextEncoderConfig:
    """Which text encoder turns a caption into a feature vector.

    ``name`` is ``minilm`` (bundled all-MiniLM-L6-v2), ``gru`` (bidirectional GRU
    trained from scratch) or any transformers model name or local folder.
    """

    name: str = "minilm"
    trainable: str = "frozen"
    max_length: int = 64
    # GRU only
    vocab_size: int = 20000
    embed_dim: int = 300
    hidden_dim: int = 512


@dataclass
class HeadConfig:
    """The MLP that maps encoder features to the relaxed code (tanh outputs)."""

    hidden_dim: int = 2048
    depth: int = 3
    dropout: float = 0.1


@dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    #: Code lengths served by one model; codes are nested prefixes of the longest one.
    bits: tuple[int, ...] = DEFAULT_BITS
    #: How relaxed outputs become bits: "sign" (bit = output >= 0), "itq" or "kmeans".
    quantizer: str = "sign"
    #: Hash-head outputs (``None``: ``DEFAULT_HEAD_WIDTH``); never fewer than the longest
    #: served code. Independent of ``bits``, so choosing fewer lengths costs no quality.
    head_width: int | None = None
    #: "plain", "flip" or "crops": every image (indexed, queried, a video frame) is encoded
    #: as the mean of these views' outputs (:mod:`crossmodal.views`). The weights do not
    #: change, so ``crossmodal eval --image-views`` measures it on any model first.
    image_views: str = "plain"
    #: trained on photos without captions (``crossmodal train --images``): the image side
    #: serves image search and duplicates; the text side is an untrained stub (a linear
    #: head, the text encoder never loaded) and a text query is refused
    image_only: bool = False

    def __post_init__(self) -> None:
        if self.image_encoder.pooling not in POOLINGS:
            raise InvalidInput(f"unknown image pooling {self.image_encoder.pooling!r}: choose {' or '.join(POOLINGS)}")
        self.bits = tuple(sorted(int(b) for b in self.bits))
        if not self.bits:
            raise InvalidInput("ModelConfig.bits must name at least one code length")
        for b in self.bits:
            if b <= 0 or b % 8:
                raise InvalidInput(f"code length {b} is not a positive multiple of 8")
        if self.head_width is not None and (self.head_width <= 0 or self.head_width % 8):
            raise InvalidInput(f"head width {self.head_width} is not a positive multiple of 8")
        if self.image_views not in IMAGE_VIEWS:
            raise InvalidInput(f"unknown image views {self.image_views!r}: choose {', '.join(IMAGE_VIEWS)}")
        check_views_fit(self.image_views, self.image_encoder)
        if self.quantizer not in QUANTIZER_NAMES:
            raise InvalidInput(f"unknown quantizer {self.quantizer!r}: choose sign, itq or kmeans")

    @property
    def max_bits(self) -> int:
        return self.bits[-1]

    @property
    def output_width(self) -> int:
        """How many relaxed outputs the heads give (codes are their prefixes)."""
        return max(self.head_width or DEFAULT_HEAD_WIDTH, self.max_bits)

    @property
    def trained_bits(self) -> tuple[int, ...]:
        """The prefix lengths the loss trains: the served ones, every default length that
        fits the head, and the full width."""
        fits = {b for b in DEFAULT_BITS if b <= self.output_width}
        return tuple(sorted(set(self.bits) | fits | {self.output_width}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bits"] = list(self.bits)
        if d["image_views"] == "plain":
            del d["image_views"]  # the config (and so the fingerprint) of every model written before it existed
        if not d["image_only"]:
            del d["image_only"]  # likewise
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(
            image_encoder=ImageEncoderConfig(**d.get("image_encoder", {})),
            text_encoder=TextEncoderConfig(**d.get("text_encoder", {})),
            head=HeadConfig(**d.get("head", {})),
            bits=tuple(d.get("bits", DEFAULT_BITS)),
            quantizer=d.get("quantizer", "sign"),
            # configs written before head_width existed had heads exactly max(bits) wide
            head_width=d.get("head_width", max(d.get("bits", DEFAULT_BITS))),
            image_views=d.get("image_views", "plain"),
            image_only=bool(d.get("image_only", False)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def check_views_fit(views: str, image_encoder: ImageEncoderConfig) -> None:
    """Crop views are cached as pooled features: they need a frozen, mean-pooled CNN."""
    if views == "crops" and (image_encoder.trainable != "frozen" or image_encoder.pooling != "mean"):
        raise InvalidInput("image views 'crops' need a frozen image encoder with mean pooling (their features are "
                           "cached once); use 'flip' or 'plain' with a trained CNN or a learned pool")


def parse_trainable(spec: str) -> tuple[str, int]:
    """Parse ``frozen`` / ``full`` / ``last:N`` into (mode, N)."""
    spec = spec.strip().lower()
    if spec in ("frozen", "full"):
        return spec, 0
    if spec.startswith("last:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = -1
        if n >= 0:
            return "last", n
    raise InvalidInput(f"trainable must be 'frozen', 'full' or 'last:N', got {spec!r}")
