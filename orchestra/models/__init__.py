"""Flax NNX decoders (Qwen3, Qwen2, Llama 3), value model and KV cache.

Hugging Face import/export (`load_hf`, `save_hf`) is `orchestra.checkpoint`'s job.
"""

from orchestra.models.config import ConfigError, DecoderConfig, MemoryOptions, RopeConfig
from orchestra.models.decoder import CausalLM, Transformer, ValueModel
from orchestra.models.kv_cache import KVCache

__all__ = ["CausalLM", "ConfigError", "DecoderConfig", "KVCache", "MemoryOptions", "RopeConfig",
           "Transformer", "ValueModel"]
