"""Incremental decoding with the KV cache: one prefill, then one-token steps.

The whole loop (prefill + `lax.scan` over steps) is one jitted call, so no
token crosses back to the host until the batch is done. Token selection is
a function `select(logits_BV, rng) -> tokens_B`; `greedy` is argmax. Rows
that emitted a stop token keep emitting `pad_id`, and the cache ignores them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from orchestra.models.decoder import CausalLM
from orchestra.models.kv_cache import KVCache

Select = Callable[[jax.Array, jax.Array], jax.Array]


def greedy(logits_BV: jax.Array, rng: jax.Array) -> jax.Array:
  del rng
  return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "select", "stop_ids",
                                             "pad_id", "cache_dtype"))
def _generate(graphdef, state, prompt_ids_BP, prompt_mask_BP, rng, *, max_new_tokens: int,
              select: Select, stop_ids: tuple[int, ...], pad_id: int, cache_dtype):
  model = nnx.merge(graphdef, state)
  b, p = prompt_ids_BP.shape
  cache = KVCache.init(model.config, b, p + max_new_tokens, cache_dtype)
  logits_BPV, cache = model.forward_with_cache(prompt_ids_BP, cache, prompt_mask_BP)
  rng, first_rng = jax.random.split(rng)
  first_B = select(logits_BPV[:, -1], first_rng)
  stop = jnp.asarray(stop_ids, jnp.int32)

  def step(carry, step_rng):
    token_B, done_B, cache = carry
    logits_B1V, cache = model.forward_with_cache(token_B[:, None], cache, ~done_B[:, None])
    next_B = select(logits_B1V[:, 0], step_rng)
    done_B = done_B | jnp.isin(token_B, stop)
    next_B = jnp.where(done_B, pad_id, next_B)
    return (next_B, done_B, cache), token_B

  done_B = jnp.zeros((b,), jnp.bool_)
  step_rngs = jax.random.split(rng, max_new_tokens)
  (last_B, _, _), tokens_NB = jax.lax.scan(step, (first_B, done_B, cache), step_rngs[:-1])
  return jnp.concatenate([tokens_NB.T, last_B[:, None]], axis=1)


def generate(model: CausalLM, prompt_ids_BP, prompt_mask_BP=None, *, max_new_tokens: int,
             select: Select = greedy, rng: jax.Array | None = None,
             stop_ids: Sequence[int] = (), pad_id: int = 0, cache_dtype=None) -> jax.Array:
  """New tokens [B, max_new_tokens] for a batch of left-padded prompts.

  Args:
    model: the causal LM.
    prompt_ids_BP: int32 prompts; shorter prompts padded on the left.
    prompt_mask_BP: 1 for real prompt tokens (default: all real).
    max_new_tokens: tokens generated per row.
    select: token choice from last-position logits (default greedy).
    rng: PRNG key passed to `select` (default key 0).
    stop_ids: a row that emits one of these ids emits `pad_id` afterwards.
    cache_dtype: KV cache dtype (default: the model's compute dtype).
  """
  prompt_ids_BP = jnp.asarray(prompt_ids_BP, jnp.int32)
  if prompt_mask_BP is None:
    prompt_mask_BP = jnp.ones_like(prompt_ids_BP, jnp.bool_)
  mask = np.asarray(prompt_mask_BP).astype(bool)
  if not mask[:, -1].all():
    raise ValueError("prompts must be left-padded: the last position of every row must be real")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, prompt_ids_BP, jnp.asarray(mask),
                   jax.random.key(0) if rng is None else rng,
                   max_new_tokens=max_new_tokens, select=select,
                   stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id),
                   cache_dtype=cache_dtype or model.model.dtype)
