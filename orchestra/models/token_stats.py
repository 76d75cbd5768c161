"""Per-token log-probs and entropies of a sequence, `chunk` positions at a time.

    logp_BT[:, t]    = log softmax(logits[:, t-1] / temperature)[tokens[:, t]]   (t >= first_token)
    entropy_BT[:, t] = -sum_v p log p of that same distribution                  (t >= first_token)

and 0 for t < first_token (t = 0 always: nothing predicts the first token).
(`orchestra.rl.losses.token_logprobs` and `token_entropy` from whole logits.) Only
positions first_token - 1 .. T - 2 go through the LM head: a loss that starts at the
completion (a GRPO batch's prompt carries no loss) skips the prompt's [T, V] logits, as
TRL's `logits_to_keep` does; the last position predicts nothing. The float32 [T, V]
logits of a long sequence are large (10 GB at T = 16k, V = 151,936) and a plain loss
keeps them several times over (logits, log-softmax, probabilities, their cotangents).
Here positions go `chunk` at a time through the LM head, each chunk rematerialised in the
backward pass, so at most one chunk's [C, V] arrays are alive.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def token_stats(hidden_BTD, tokens_BT, logits_fn: Callable, temperature: float = 1.0,
                chunk: int = 1024, first_token: int = 1):
  """(logp_BT, entropy_BT) as in the module docstring; `logits_fn` maps hidden [B, C, D]
  to float32 logits [B, C, V] (the LM head); `first_token` is a Python int. A window of
  at most `chunk` positions is one chunk, not rematerialised (recomputing it would save
  nothing)."""
  b, t, d = hidden_BTD.shape
  start = max(first_token, 1) - 1                       # position predicting first_token
  n = t - 1 - start
  if n <= 0:
    return jnp.zeros((b, t), jnp.float32), jnp.zeros((b, t), jnp.float32)
  hidden_BND, targets_BN = hidden_BTD[:, start:t - 1], tokens_BT[:, start + 1:]
  if n <= chunk:
    picked_BN, entropy_BN = _chunk_stats(logits_fn, temperature, hidden_BND, targets_BN)
  else:
    picked_BN, entropy_BN = _chunked_stats(logits_fn, temperature, hidden_BND, targets_BN,
                                           chunk)
  to_tokens = lambda x_BN: jnp.pad(x_BN, ((0, 0), (start + 1, 0)))   # position t -> token t+1
  return to_tokens(picked_BN), to_tokens(entropy_BN)


def _chunked_stats(logits_fn: Callable, temperature: float, hidden_BND, targets_BN, c: int):
  """`_chunk_stats` over N positions, c at a time in a rematerialised `lax.map`."""
  b, n, d = hidden_BND.shape
  pad = -n % c
  m = (n + pad) // c
  hidden_MBCD = jnp.pad(hidden_BND, ((0, 0), (0, pad), (0, 0))).reshape(b, m, c, d).swapaxes(0, 1)
  targets_MBC = jnp.pad(targets_BN, ((0, 0), (0, pad))).reshape(b, m, c).swapaxes(0, 1)
  chunk_stats = jax.checkpoint(lambda h, y: _chunk_stats(logits_fn, temperature, h, y))
  picked_MBC, entropy_MBC = jax.lax.map(lambda xs: chunk_stats(*xs), (hidden_MBCD, targets_MBC))
  per_position = lambda x_MBC: x_MBC.swapaxes(0, 1).reshape(b, m * c)[:, :n]
  return per_position(picked_MBC), per_position(entropy_MBC)


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
