"""Flax NNX decoders (Qwen3, Qwen2, Llama 3), value model and KV cache.

`load_hf` / `save_hf` live in `orchestra.checkpoint.hf` (which imports this
package) and are re-exported here lazily to avoid an import cycle.
"""

from orchestra.models.config import ConfigError, DecoderConfig, RopeConfig
from orchestra.models.decoder import CausalLM, Transformer, ValueModel
from orchestra.models.kv_cache import KVCache

__all__ = ["CausalLM", "ConfigError", "DecoderConfig", "KVCache", "RopeConfig", "Transformer",
           "ValueModel", "load_hf", "save_hf"]


def __getattr__(name):
  if name in ("load_hf", "save_hf"):
    from orchestra.checkpoint import hf
    return getattr(hf, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
