"""Checkpoints: orbax save/restore/resume of training state, Hugging Face import/export."""

from orchestra.checkpoint.errors import CheckpointError, StepNotRestored
from orchestra.checkpoint.hf import generation_eos_ids, load_hf, save_hf, tensor_map
from orchestra.checkpoint.manager import SFT_DIR, CheckpointManager

__all__ = ["SFT_DIR", "CheckpointError", "CheckpointManager", "StepNotRestored",
           "generation_eos_ids", "load_hf", "save_hf", "tensor_map"]
