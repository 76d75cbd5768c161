"""Checkpoints: orbax save/restore/resume of training state, Hugging Face import/export."""

from orchestra.checkpoint.errors import CheckpointError, StepNotRestored
from orchestra.checkpoint.hf import load_hf, save_hf, tensor_map
from orchestra.checkpoint.manager import SFT_DIR, CheckpointManager

__all__ = ["SFT_DIR", "CheckpointError", "CheckpointManager", "StepNotRestored", "load_hf", "save_hf",
           "tensor_map"]
