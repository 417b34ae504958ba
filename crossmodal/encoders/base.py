"""The two encoder interfaces every registered encoder implements.

The model, the trainer and the feature cache read these attributes and call these
methods directly: an encoder declares what it is by subclassing, never by having or
lacking an attribute someone probes for.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Encoder(nn.Module):
    """What both kinds share: ``output_dim`` features, ``blocks()`` from input to output
    (so ``last:N`` means the same for a CNN and a transformer), and trainability."""

    output_dim: int
    #: trained from scratch: ``frozen`` makes no sense and is ignored
    always_trainable: bool = False
    #: no parameter trains (set by ``apply_trainable``); its outputs can be cached
    is_frozen: bool = False

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} must list its blocks")


class TextEncoder(Encoder):
    """Strings -> ``tokenize`` -> ``forward(**batch)`` -> pooled features [B, output_dim]."""

    #: builds its vocabulary from the training captions (``build_vocab``) before training
    needs_vocab: bool = False

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def build_vocab(self, texts) -> None:
        """Encoders with ``needs_vocab`` learn their vocabulary here; others have one."""

    def has_vocab(self) -> bool:
        return True

    def save_extra(self, folder: Path) -> None:
        """Files the weights do not hold (a vocabulary), written beside them."""

    def load_extra(self, folder: Path) -> None:
        """Read back what ``save_extra`` wrote."""
