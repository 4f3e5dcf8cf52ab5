"""Training: negative sampling, the shared trainer and one-call runs from a configuration."""
from recgoat.training.sampling import NegativeSampler
from recgoat.training.trainer import Trainer, TrainConfig

__all__ = ["NegativeSampler", "Trainer", "TrainConfig"]
