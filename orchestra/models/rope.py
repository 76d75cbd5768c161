"""Rotary position embeddings (RoPE), including Llama 3 frequency scaling.

With head dim E and position p, pair (x_i, x_{i+E/2}) is rotated by the
angle p * inv_freq_i, where inv_freq_i = theta ** (-2i / E)  (the
"rotate-half" layout used by Qwen and Llama checkpoints on Hugging Face).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from orchestra.models.config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
  """inv_freq [E/2] in float32, computed as transformers computes it.

  For `llama3` scaling, with wavelength w_i = 2π / inv_freq_i,
  L = original_max_position_embeddings, lo = L / low_freq_factor and
  hi = L / high_freq_factor:
    w_i > lo        ->  inv_freq_i / factor              (long waves: interpolate)
    w_i < hi        ->  inv_freq_i                       (short waves: keep)
    otherwise       ->  (1 - s) inv_freq_i / factor + s inv_freq_i,
                        s = (L / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  inv_freq = (1.0 / (np.float32(rope.theta) ** exponents)).astype(np.float32)
  if rope.rope_type == "default":
    return inv_freq
  old_len = rope.original_max_position_embeddings
  low_wavelen = old_len / rope.low_freq_factor
  high_wavelen = old_len / rope.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
  smooth = (old_len / wavelen - rope.low_freq_factor) / (
      rope.high_freq_factor - rope.low_freq_factor)
  smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
  is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions_BT: jnp.ndarray, inv_freq: np.ndarray, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
  """cos and sin tables [B, T, E] for integer positions, computed in float32."""
  angles_BTF = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  angles_BTE = jnp.concatenate([angles_BTF, angles_BTF], axis=-1)
  return jnp.cos(angles_BTE).astype(dtype), jnp.sin(angles_BTE).astype(dtype)


def apply_rope(x_BTNE: jnp.ndarray, cos_BTE: jnp.ndarray, sin_BTE: jnp.ndarray) -> jnp.ndarray:
  """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]."""
  x1, x2 = jnp.split(x_BTNE, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  cos, sin = cos_BTE[:, :, None, :], sin_BTE[:, :, None, :]
  return x_BTNE * cos + rotated * sin
