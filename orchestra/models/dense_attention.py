"""Dense grouped-query attention with a hand-written backward pass.

    S = q k^T / sqrt(E), masked        P = softmax(S)        out = P v
    dV^T = dO^T P                      dP = dO v^T
    dS = P * (dP - rowsum(dP * P)) / sqrt(E), 0 where masked
    dQ = dS k                          dK^T = q^T dS

Autodiff forms dV = P^T dO and dK = dS^T q, dots that contract the first non-batch axis of
both operands, a form XLA:CPU's YNNPACK does not take: they ran on the generic path at
~16 GFLOP/s. Here q^T and dO^T ([E, X], a quarter of P's [X, S] at the anchors' shapes)
are materialised first, behind an optimization barrier so the simplifier cannot fold the
transposes back, every product is a plain batched matmul, and the small [E, S] results
are transposed back. (Materialising P^T and dS^T instead, the previous version, moved 4x
the bytes: the anchors' fwd+bwd, 32 x 128 tokens on 2 cores, 216-220 -> 210-212 ms; with
autodiff's dots one layer took 15.5 ms, 10.4 with P^T and dS^T.) The forward pass is
unchanged.

Query heads are folded onto their kv heads (`fold_query_heads`, X = G*T rows per kv head).
`attend_cache_dense` is the same forward over a KV cache's layout (keys transposed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from orchestra.models.blockwise_attention import (fold_query_heads, masked_scores,
                                                  unfold_query_heads)


@jax.custom_vjp
def attend_kv_major(q_BTHE, k_BKSE, v_BKSE, mask_BTS):
  """Grouped-query softmax attention: softmax(q k^T / sqrt(E) + mask) v, with keys/values
  kv-head major [B, K, S, E]; [B, T, H, E] out.

  Masked logits are set to the most negative float32 (`masked_scores`), so a row with no
  visible key (a padding query) gives a finite average instead of NaN.
  """
  return _forward(q_BTHE, k_BKSE, v_BKSE, mask_BTS)[0]


def attend_cache_dense(q_BTHE, k_BKES, v_BKSE, mask_BTS):
  """`attend_kv_major` over a KV cache's layout (keys transposed, [B, K, E, S]; values
  [B, K, S, E]), forward only: both products read the cache as it lies."""
  return _attention(q_BTHE, k_BKES, v_BKSE, mask_BTS)[0]


def _attention(q_BTHE, k_BKES, v_BKSE, mask_BTS):
  """(output [B, T, H, E], folded queries [B, K, X, E], probabilities [B, K, X, S])."""
  b, k, e, s = k_BKES.shape
  q_BKXE = fold_query_heads(q_BTHE, k)
  logits_BKGTS = masked_scores(q_BKXE, k_BKES, mask_BTS)
  _, _, g, t, _ = logits_BKGTS.shape
  probs_BKXS = jax.nn.softmax(logits_BKGTS, axis=-1).reshape(b, k, g * t, s)
  out_BKXE = jnp.matmul(probs_BKXS.astype(v_BKSE.dtype), v_BKSE)
  return unfold_query_heads(out_BKXE.reshape(b, k, g, t, e)), q_BKXE, probs_BKXS


def _forward(q_BTHE, k_BKSE, v_BKSE, mask_BTS):
  """(output, residuals of the backward pass)."""
  out_BTHE, q_BKXE, probs_BKXS = _attention(q_BTHE, jnp.swapaxes(k_BKSE, -1, -2), v_BKSE,
                                            mask_BTS)
  return out_BTHE, (q_BKXE, k_BKSE, v_BKSE, mask_BTS, probs_BKXS)


def _backward(residuals, d_out_BTHE):
  """(dq, dk, dv, no cotangent for the mask), as in the module docstring."""
  q_BKXE, k_BKSE, v_BKSE, mask_BTS, probs_BKXS = residuals
  b, k, x, e = q_BKXE.shape
  t, s = mask_BTS.shape[1], k_BKSE.shape[2]
  d_out_BKXE = fold_query_heads(d_out_BTHE, k)
  d_probs_BKXS = jnp.matmul(d_out_BKXE, jnp.swapaxes(v_BKSE, -1, -2),
                            preferred_element_type=jnp.float32)
  d_scores_BKXS = probs_BKXS * (d_probs_BKXS - jnp.sum(d_probs_BKXS * probs_BKXS, axis=-1,
                                                       keepdims=True)) * (e ** -0.5)
  # A query with no visible key has uniform P over masked keys; their scores are constants.
  d_scores_BKXS = jnp.where(mask_BTS[:, None, None], d_scores_BKXS.reshape(b, k, x // t, t, s),
                            0.0).reshape(b, k, x, s)
  q_BKEX, d_out_BKEX = jax.lax.optimization_barrier(
      (jnp.swapaxes(q_BKXE, -1, -2), jnp.swapaxes(d_out_BKXE, -1, -2).astype(v_BKSE.dtype)))
  d_q_BKXE = jnp.matmul(d_scores_BKXS.astype(k_BKSE.dtype), k_BKSE,
                        preferred_element_type=jnp.float32)
  # In the operands' dtype: XLA:CPU has no bfloat16 x bfloat16 -> float32 kernel for these.
  d_k_BKES = jnp.matmul(q_BKEX, d_scores_BKXS.astype(k_BKSE.dtype))
  d_v_BKES = jnp.matmul(d_out_BKEX, probs_BKXS.astype(v_BKSE.dtype))
  d_k_BKSE, d_v_BKSE = jnp.swapaxes(d_k_BKES, -1, -2), jnp.swapaxes(d_v_BKES, -1, -2)
  d_q_BTHE = unfold_query_heads(d_q_BKXE.reshape(b, k, x // t, t, e))
  return (d_q_BTHE.astype(q_BKXE.dtype), d_k_BKSE.astype(k_BKSE.dtype),
          d_v_BKSE.astype(v_BKSE.dtype), None)


attend_kv_major.defvjp(_forward, _backward)
