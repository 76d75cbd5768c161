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
  to float32 logits [B, C, V] (the LM head). A sequence of at most `chunk` positions is
  one chunk, not rematerialised (recomputing it would save nothing)."""
  b, t, d = hidden_BTD.shape
  targets_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))      # position t predicts t + 1
  if t <= chunk:
    picked_BT, entropy_BT = _chunk_stats(logits_fn, temperature, hidden_BTD, targets_BT)
    return _shift(picked_BT), _shift(entropy_BT)
  c = chunk
  pad = -t % c
  n = (t + pad) // c
  hidden_NBCD = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)
  targets_NBC = jnp.pad(targets_BT, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

  chunk_stats = jax.checkpoint(lambda h, y: _chunk_stats(logits_fn, temperature, h, y))
  picked_NBC, entropy_NBC = jax.lax.map(lambda xs: chunk_stats(*xs), (hidden_NBCD, targets_NBC))
  per_position = lambda x_NBC: x_NBC.swapaxes(0, 1).reshape(b, n * c)[:, :t]
  return _shift(per_position(picked_NBC)), _shift(per_position(entropy_NBC))


def _chunk_stats(logits_fn: Callable, temperature: float, hidden_BCD, targets_BC):
  """(log p of each target, entropy) at each of the C positions.

  The B x C positions go through the softmax and the pick as one axis: on XLA:CPU the
  gradient of that pick over [B, C, V] (a scatter with two batch axes) is slower (LM head
  and loss at 32 x 128 tokens, V 1024, fwd+bwd: 20 ms over [B, C, V], 12 ms flat)."""
  b, c = targets_BC.shape
  logits_NV = logits_fn(hidden_BCD).astype(jnp.float32).reshape(b * c, -1)
  logp_NV = jax.nn.log_softmax(logits_NV / temperature, -1)
  picked_N = jnp.take_along_axis(logp_NV, targets_BC.reshape(b * c, 1), axis=-1)[:, 0]
  entropy_N = -(jnp.exp(logp_NV) * logp_NV).sum(-1)
  return picked_N.reshape(b, c), entropy_N.reshape(b, c)


def _shift(x_BT):
  """Per position -> per predicted token: position t's value belongs to token t + 1."""
  return jnp.pad(x_BT[:, :-1], ((0, 0), (1, 0)))
