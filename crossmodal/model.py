"""The twin-encoder hashing model and its save/load.

``CrossModalHasher`` = image encoder + text encoder + one hash head per modality +
a quantizer. A saved model is a folder: ``config.json`` + ``model.safetensors`` (+ any
encoder extras such as a GRU vocabulary); ``from_pretrained`` rebuilds it and gives
bit-identical codes for the same input.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .atomic import atomic_write_text
from .errors import InvalidInput, MissingInput
from .codes import pack_bits
from .config import ModelConfig, parse_trainable
from .encoders import ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
from .heads import HashHead
from .quantizers import create_quantizer
from .views import make_views, mean_over_views

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


class CrossModalHasher(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.image_encoder = create_image_encoder(config.image_encoder)
        self.text_encoder = create_text_encoder(config.text_encoder)
        self.image_head = HashHead(self.image_encoder.output_dim, config.output_width, config.head)
        self.text_head = HashHead(self.text_encoder.output_dim, config.output_width, config.head)
        self.quantizer = create_quantizer(config.quantizer, config.bits)
        #: how many final image-encoder stages train on top of a frozen trunk (``last:N`` on
        #: an encoder that can split its forward); 0 when there is no such split
        self.image_tail_stages = _tail_stages(config.image_encoder.trainable, self.image_encoder)
        #: how many final text-encoder layers train on cached token states of the frozen ones
        self.text_tail_layers = _text_tail_layers(config.text_encoder.trainable, self.text_encoder)

    # ---- relaxed outputs -------------------------------------------------------------
    def image_relaxed_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_head(features)

    def text_relaxed_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.text_head(features)

    def image_relaxed_from_trunk(self, activations: torch.Tensor) -> torch.Tensor:
        """Relaxed codes from cached trunk activations (see ``image_tail_stages``)."""
        return self.image_head(self.image_encoder.tail(activations, self.image_tail_stages))

    def text_relaxed_from_trunk(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Relaxed codes from cached token states (see ``text_tail_layers``)."""
        return self.text_head(self.text_encoder.tail(states, attention_mask, self.text_tail_layers))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def image_relaxed(self, pixels: torch.Tensor, views: str | None = None) -> torch.Tensor:
        """Relaxed outputs of normalised pixels: the mean over ``views`` (default: the
        config's ``image_views``; :mod:`crossmodal.views`). Every encoding path comes
        through here or through :func:`~crossmodal.features.relaxed_outputs`, so indexed
        and queried images agree; training passes "plain" (its augmentations already
        mirror and crop at random)."""
        views = views or self.config.image_views
        return mean_over_views(self.image_head(self.image_encoder(make_views(pixels.to(self.device), views))), views)

    def text_relaxed(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_head(self.text_encoder(**{k: v.to(self.device) for k, v in tokens.items()}))

    # ---- inference API ---------------------------------------------------------------
    def image_transform(self, train: bool = False):
        return self.image_encoder.transform(train)

    @torch.inference_mode()
    def embed_images(self, images: Iterable[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Relaxed (pre-sign) outputs for PIL images: float32 [N, output_width]."""
        self.eval()
        tf = self.image_transform(False)
        out, batch = [], []
        for img in images:
            batch.append(tf(img))
            if len(batch) == batch_size:
                out.append(self.image_relaxed(torch.stack(batch)))
                batch = []
        if batch:
            out.append(self.image_relaxed(torch.stack(batch)))
        return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, self.config.output_width), np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Relaxed (pre-sign) outputs for captions: float32 [N, output_width]."""
        self.eval()
        texts = list(texts)
        out = [self.text_relaxed(self.text_encoder.tokenize(texts[s:s + batch_size]))
               for s in range(0, len(texts), batch_size)]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, self.config.output_width), np.float32)

    @torch.inference_mode()
    def quantize(self, relaxed: np.ndarray, nbits: int) -> np.ndarray:
        """Relaxed outputs -> packed codes uint8 [N, nbits/8]."""
        bits = self.quantizer(torch.as_tensor(relaxed, dtype=torch.float32, device=self.device), nbits).cpu().numpy()
        return pack_bits(bits)

    def encode_images(self, images: Iterable[Image.Image], nbits: int) -> np.ndarray:
        return self.quantize(self.embed_images(images), nbits)

    def encode_texts(self, texts: Sequence[str], nbits: int) -> np.ndarray:
        return self.quantize(self.embed_texts(texts), nbits)

    def fit_quantizer(self, relaxed_images: np.ndarray, relaxed_texts: np.ndarray) -> None:
        if self.quantizer.needs_fit:
            self.quantizer.fit(np.concatenate([relaxed_images, relaxed_texts]))

    # ---- persistence -----------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors (+ encoder extras) into ``folder``.

        Each file is written to a temporary name and renamed into place, weights first
        and config last, so a reader never sees a half-written file; other files in the
        folder (training logs, checkpoints) are left alone."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
        os.replace(tmp, folder / WEIGHTS_NAME)
        self.text_encoder.save_extra(folder)
        cfg = {"format_version": FORMAT_VERSION, **self.config.to_dict()}
        atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2, sort_keys=True))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "CrossModalHasher":
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise MissingInput(f"{folder} is not a crossmodal model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        raw = json.loads(cfg_path.read_text())
        version = raw.pop("format_version", 1)
        if version > FORMAT_VERSION:
            raise InvalidInput(f"{folder} was written by a newer crossmodal (format {version} > {FORMAT_VERSION})")
        config = ModelConfig.from_dict(raw)
        # Weights come from the file: do not load pretrained backbones again.
        config.image_encoder.weights = "none"
        model = cls(config)
        model.text_encoder.load_extra(folder)
        missing, unexpected = model.load_state_dict(load_file(str(w_path)), strict=False)
        if missing or unexpected:
            raise InvalidInput(f"{w_path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.config = ModelConfig.from_dict(raw)
        model.eval()
        return model

    def fingerprint(self) -> str:
        """A short hash of the config and every weight: indexes record it and refuse a
        different model."""
        h = hashlib.sha256(self.config.to_json().encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _tail_stages(trainable: str, encoder: ImageEncoder) -> int:
    """``last:N`` trains N stages on cached trunk activations; a learned pool on a frozen
    backbone trains on cached inputs of the last stage (its 1x1 head conv, cheap to rerun,
    whose input has a quarter of its output's channels, so the cache is 4x smaller)."""
    mode, n = parse_trainable(trainable)
    if not encoder.supports_split:
        return 0
    if mode == "frozen" and encoder.new_parameters():
        return 1
    if mode != "last" or n <= 0:
        return 0
    return min(n, encoder.num_stages)


def _text_tail_layers(trainable: str, encoder: TextEncoder) -> int:
    mode, n = parse_trainable(trainable)
    if mode != "last" or n <= 0 or not encoder.supports_split:
        return 0
    return min(n, encoder.num_stages - 1)  # the embeddings stay in the trunk


def create_model(config: ModelConfig | None = None) -> CrossModalHasher:
    """The one factory: a model from a config (defaults: EfficientNet-Lite0 + MiniLM)."""
    return CrossModalHasher(config or ModelConfig())
