"""Tiny random Hugging Face decoders saved with `save_pretrained`, for parity tests."""

from __future__ import annotations

import numpy as np

# name -> (config class name, kwargs). Sizes are divisible by 8 where sharding tests need it.
TINY_CONFIGS = {
    "qwen3": ("Qwen3Config", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=4, head_dim=8, tie_word_embeddings=False)),
    "qwen3_tied_wide_heads": ("Qwen3Config", dict(   # head_dim 24 != hidden / heads = 8
        vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=24, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)),
    "llama3": ("LlamaConfig", dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, rope_theta=500_000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=16),
        tie_word_embeddings=False)),
}


def make_hf_model(name: str, path, seed: int = 0, dtype: str = "float32"):
  """Builds a random HF model of `TINY_CONFIGS[name]`, saves it to `path`, returns it."""
  import torch
  import transformers
  cls_name, kwargs = TINY_CONFIGS[name]
  config = getattr(transformers, cls_name)(**kwargs, bos_token_id=None, eos_token_id=None,
                                           pad_token_id=None)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config)
  # Random norms and biases so that a swapped or skipped tensor changes the logits.
  with torch.no_grad():
    for name_, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name_ else 0.1 * torch.randn_like(p))
  model = model.to(getattr(torch, dtype)).eval()
  model.save_pretrained(path)
  return model


def padded_batch(vocab_size: int, batch: int = 3, length: int = 12, pad_left: int = 4, seed: int = 0):
  """Random ids with row 1 left-padded by `pad_left` tokens; returns ids, mask, positions."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(0, vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :pad_left] = 0
  ids[1, :pad_left] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return ids, mask, positions


def hf_logits(model, ids, mask, positions) -> np.ndarray:
  import torch
  with torch.no_grad():
    out = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()
