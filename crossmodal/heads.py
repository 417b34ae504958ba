"""Hash heads: encoder features -> relaxed codes in (-1, 1).

One head serves every code length: its output has ``max(bits)`` dimensions and a code
of K bits is the first K of them (nested prefixes), so the user picks the length when
indexing without retraining.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import HeadConfig


class SignSTE(torch.autograd.Function):
    """sign() forward with a straight-through (identity) gradient; sign(0) := +1 so a
    bit is 1 exactly where the relaxed value is >= 0."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


class HashHead(nn.Module):
    """MLP -> tanh. Depth 1 is a linear projection; deeper heads add LayerNorm+GELU layers."""

    def __init__(self, in_dim: int, out_bits: int, cfg: HeadConfig):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(max(cfg.depth - 1, 0)):
            layers += [nn.Linear(d, cfg.hidden_dim), nn.LayerNorm(cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout)]
            d = cfg.hidden_dim
        layers.append(nn.Linear(d, out_bits))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(features))
