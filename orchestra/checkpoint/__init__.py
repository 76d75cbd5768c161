"""Checkpoints: Hugging Face import/export (and, later, orbax save/restore)."""

from orchestra.checkpoint.hf import CheckpointError, load_hf, save_hf, tensor_map

__all__ = ["CheckpointError", "load_hf", "save_hf", "tensor_map"]
