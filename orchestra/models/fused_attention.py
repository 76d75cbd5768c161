"""Causal attention through `jax.nn.dot_product_attention`: cuDNN's fused flash kernel on
NVIDIA GPUs (memory linear in T, the non-causal half never computed), XLA's elsewhere.

The keys each row may read are given as lengths, not a [T, S] mask (a mask would be
materialised and bypass the flash kernel): with `L_b = max(1, sum_s key_mask[b, s])`,
query t of row b sees keys s <= t with s < L_b. That is exactly the dense path's
masking when each row's real tokens are a prefix (right padding, as every training
batch is packed: orchestra/train/batching.py); the padding queries after L_b are
outside every loss. An all-padding row gets L = 1 so no softmax is empty (no NaN).
Left-padded batches (the sampler's prompts) go through the KV-cache path, which always
uses the dense `attend`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fused_implementation() -> str:
  """"cudnn" on GPUs, "xla" on other backends (same results, dense memory)."""
  return "cudnn" if jax.default_backend() == "gpu" else "xla"


def attend_fused(q_BTHE, k_BTKE, v_BTKE, key_mask_BT, implementation: str | None = None):
  """Causal grouped-query attention over T right-padded tokens, [B, T, H, E] out."""
  lengths_B = jnp.maximum(key_mask_BT.astype(jnp.int32).sum(axis=1), 1)
  out_BTHE = jax.nn.dot_product_attention(
      q_BTHE, k_BTKE, v_BTKE, is_causal=True, query_seq_lengths=lengths_B,
      key_value_seq_lengths=lengths_B, implementation=implementation or fused_implementation())
  return out_BTHE.astype(q_BTHE.dtype)
