"""Per-token log-probs and entropies of a sequence, `chunk` positions at a time.

    logp_BT[:, t]    = log softmax(logits[:, t-1] / temperature)[tokens[:, t]]   (0 at t = 0)
    entropy_BT[:, t] = -sum_v p log p of that same distribution                  (0 at t = 0)

(`orchestra.rl.losses.token_logprobs` and `token_entropy` from whole logits.) The float32
[T, V] logits of a long sequence are large (10 GB at T = 16k, V = 151,936) and a plain
loss keeps them several times over (logits, log-softmax, probabilities, their cotangents).
Here positions go `chunk` at a time through the LM head, each chunk rematerialised in the
backward pass, so at most one chunk's [C, V] arrays are alive.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

def token_stats(hidden_BTD, tokens_BT, logits_fn: Callable, temperature: float = 1.0,
                chunk: int = 1024):
  """(logp_BT, entropy_BT) as in the module docstring; `logits_fn` maps hidden [B, C, D]
  to float32 logits [B, C, V] (the LM head)."""
  b, t, d = hidden_BTD.shape
  targets_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))      # position t predicts t + 1
  c = min(chunk, t)
  pad = -t % c
  n = (t + pad) // c
  hidden_NBCD = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)
  targets_NBC = jnp.pad(targets_BT, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_stats(hidden_BCD, targets_BC):
    logp_BCV = jax.nn.log_softmax(logits_fn(hidden_BCD).astype(jnp.float32) / temperature, -1)
    picked_BC = jnp.take_along_axis(logp_BCV, targets_BC[..., None], axis=-1)[..., 0]
    return picked_BC, -(jnp.exp(logp_BCV) * logp_BCV).sum(-1)

  picked_NBC, entropy_NBC = jax.lax.map(lambda xs: chunk_stats(*xs), (hidden_NBCD, targets_NBC))

  def aligned(x_NBC):                    # [N, B, C] per position -> [B, T] per predicted token
    x_BT = x_NBC.swapaxes(0, 1).reshape(b, n * c)[:, :t - 1]
    return jnp.pad(x_BT, ((0, 0), (1, 0)))

  return aligned(picked_NBC), aligned(entropy_NBC)
