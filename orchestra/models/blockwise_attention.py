"""Causal attention in blocks (flash-style): memory linear in the sequence length.

The dense path (`decoder.attend`) builds [T, S] scores per head; at 16k tokens that is 1 GiB
per head and batch row in float32, and autodiff keeps it for the backward pass. Here the
queries are cut into blocks of C tokens, and each query block runs over the key blocks at
or before it with an online softmax (Milakov & Gimelshein 2018; Dao et al. 2022):

    s_j  = q k_j^T / sqrt(E), masked        m' = max(m, rowmax s_j)
    l'   = l e^(m - m') + rowsum e^(s_j - m')
    acc' = acc e^(m - m') + e^(s_j - m') v_j          out = acc / l

Key blocks after the query block are skipped (`lax.cond`), so the causal half costs
nothing. Memory: both loops are rematerialised (`jax.checkpoint`), so the backward pass
keeps one [C, E] accumulator per (query block, key block) step of the block it is
differentiating, never a [T, S] array: activations grow linearly with T.

Masking is the dense path's: key slot s is visible to query slot t when s <= t and the key
is a real token (`key_mask_BS`); a masked score is float32's most negative value, so a
query with no visible key (padding) gets a finite output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ATTENTION_BLOCK = 512           # tokens per query and key block


def attend_blockwise(q_BTHE, k_BTKE, v_BTKE, key_mask_BT, block: int = ATTENTION_BLOCK):
  """Causal grouped-query attention over T tokens, [B, T, H, E] out; see the module doc."""
  b, t, h, e = q_BTHE.shape
  k = k_BTKE.shape[2]
  g = h // k
  c = min(block, t)
  pad = -t % c
  n = (t + pad) // c
  if pad:
    q_BTHE, k_BTKE, v_BTKE = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
                              for x in (q_BTHE, k_BTKE, v_BTKE))
    key_mask_BT = jnp.pad(key_mask_BT, ((0, 0), (0, pad)))
  q_NBKGCE = q_BTHE.reshape(b, n, c, k, g, e).transpose(1, 0, 3, 4, 2, 5)
  k_NBKCE = k_BTKE.reshape(b, n, c, k, e).transpose(1, 0, 3, 2, 4)
  v_NBKCE = v_BTKE.reshape(b, n, c, k, e).transpose(1, 0, 3, 2, 4)
  mask_NBC = key_mask_BT.astype(jnp.bool_).reshape(b, n, c).transpose(1, 0, 2)
  keys = (jnp.arange(n), k_NBKCE, v_NBKCE, mask_NBC)

  @jax.checkpoint
  def query_block(qi, q_BKGCE):
    zeros = jnp.zeros(q_BKGCE.shape[:-1], jnp.float32)
    init = (jnp.zeros(q_BKGCE.shape, jnp.float32), zeros + jnp.finfo(jnp.float32).min, zeros)
    step = jax.checkpoint(lambda carry, xs: (_key_block(q_BKGCE, qi, c, carry, *xs), None))
    (acc, _, denom), _ = jax.lax.scan(step, init, keys)
    return (acc / denom[..., None]).astype(q_BTHE.dtype)

  out_NBKGCE = jax.lax.map(lambda args: query_block(*args), (jnp.arange(n), q_NBKGCE))
  out_BTHE = out_NBKGCE.transpose(1, 0, 4, 2, 3, 5).reshape(b, n * c, h, e)
  return out_BTHE[:, :t]


def _key_block(q_BKGCE, qi, c: int, carry, ki, k_BKCE, v_BKCE, mask_BC):
  """One online-softmax update of (acc, running max m, denominator l) by key block ki;
  blocks after query block qi are skipped."""

  def update(carry):
    acc_BKGCE, max_BKGC, denom_BKGC = carry
    e = q_BKGCE.shape[-1]
    scores = jnp.einsum("bkgce,bkse->bkgcs", q_BKGCE, k_BKCE,
                        preferred_element_type=jnp.float32) * (e ** -0.5)
    causal_CS = ki * c + jnp.arange(c)[None, :] <= qi * c + jnp.arange(c)[:, None]
    visible = causal_CS[None, None, None] & mask_BC[:, None, None, None, :]
    scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
    new_max = jnp.maximum(max_BKGC, scores.max(-1))
    probs = jnp.exp(scores - new_max[..., None])
    correction = jnp.exp(max_BKGC - new_max)
    denom = denom_BKGC * correction + probs.sum(-1)
    acc = acc_BKGCE * correction[..., None] + jnp.einsum(
        "bkgcs,bkse->bkgce", probs.astype(v_BKCE.dtype), v_BKCE,
        preferred_element_type=jnp.float32)
    return acc, new_max, denom

  return jax.lax.cond(ki <= qi, update, lambda carry: carry, carry)
