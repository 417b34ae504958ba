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

    @property
    def num_stages(self) -> int:
        return len(self.blocks())

    #: where the pretrained weights came from, ``{distribution or model name: version}``;
    #: empty when they exist only in a model folder (trained from scratch, a local file).
    #: A frozen encoder with a source is saved by reference, not copied (``model.py``).
    pretrained_source: dict[str, str] = {}

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters with no pretrained value (a learned pool on a pretrained backbone):
        they train even when the encoder is frozen, at the heads' learning rate."""
        return []


def distribution_version(name: str) -> str:
    """The installed version of a Python distribution ('not installed' without one)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class TextEncoder(Encoder):
    """Strings -> ``tokenize`` -> ``forward(**batch)`` -> pooled features [B, output_dim]."""

    #: builds its vocabulary from the training captions (``build_vocab``) before training
    needs_vocab: bool = False
    #: can run its lower layers (``trunk``) apart from its top ones (``tail``): a ``last:N``
    #: fine-tune then trains on cached token states of the frozen lower layers
    supports_split: bool = False

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_tail: int) -> torch.Tensor:
        """Token states [B, T, H] before the last ``n_tail`` blocks."""
        raise NotImplementedError(f"{type(self).__name__} cannot run its layers separately")

    def tail(self, states: torch.Tensor, attention_mask: torch.Tensor, n_tail: int) -> torch.Tensor:
        """The last ``n_tail`` blocks and pooling: ``tail(trunk(x, n), mask, n) == forward(x)``."""
        raise NotImplementedError(f"{type(self).__name__} cannot run its layers separately")

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
