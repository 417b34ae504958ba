"""Training: losses, the feature cache and the trainer. Imports ``crossmodal`` only."""
from .losses import HashingLoss, LossConfig
from .trainer import TrainConfig, Trainer, init_distributed_from_env

__all__ = ["HashingLoss", "LossConfig", "TrainConfig", "Trainer", "init_distributed_from_env"]
