"""Training: the options (TrainConfig), the objective, checkpoints, and the loop."""

from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "train"]
