"""Fine-tuning and training FAL models: ``falv train`` and :func:`train`."""

from falv.training.config import TrainConfig
from falv.training.loop import TrainingInterrupted, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "train"]
