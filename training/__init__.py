"""Training: losses, the trainer and the training pipeline. Imports ``crossmodal`` only.

The configs (``training.config``) are plain data; everything else loads with torch on
first use (PEP 562), so the command line's ``--help`` reads the defaults without it.
"""
from __future__ import annotations

import importlib

from .config import LossConfig, TrainConfig

_LAZY = {"HashingLoss": ".losses", "TrainingRun": ".run", "train_model": ".run",
         "init_distributed_from_env": ".distributed", "Trainer": ".trainer"}

__all__ = ["HashingLoss", "LossConfig", "TrainConfig", "Trainer", "TrainingRun", "init_distributed_from_env",
           "train_model"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
