"""Training: losses, the trainer and the training pipeline. Imports ``crossmodal`` only."""
from .losses import HashingLoss, LossConfig
from .run import TrainingRun, train_model
from .distributed import init_distributed_from_env
from .trainer import TrainConfig, Trainer

__all__ = ["HashingLoss", "LossConfig", "TrainConfig", "Trainer", "TrainingRun", "init_distributed_from_env",
           "train_model"]
