"""Continuous batching on device: B decode slots over one KV cache, refilled between chunks.

A `DecodeState` of B rows (slots) decodes in chunks (`decode_chunk`: up to `steps` steps,
or until a row ends when requests are waiting). Between chunks the host takes the ended
rows' tokens and puts new requests in their slots: `prefill_rows` runs k new prompts in a
batch of their own, `insert_rows` copies them into free slots. When no row is live, the
prefilled batch, made with room to decode in, is the new state itself (no copy).
Rows of all ages share the cache's one write index I, so a new row of L prefilled slots
goes in at slots [I - L, I), right-aligned like a left-padded prompt (less the leading
slots that are padding in every new row: `insert_rows`' `lead`); `shift` rolls the whole
cache along its slots so that every live row and the next chunk fit (I >= the longest
row, I + steps <= S), and `resize` grows S (or the token width N) when a longer request
comes. `take_slots` copies an ended row's keys and values out, on device, for the prefix
cache.

A row's result does not depend on when it joined or who shares the cache: masking is
exact, its RoPE positions are its own, and its samples use its own key folded with its own
token index (`decoding.DecodeState`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from orchestra.models.decoding import (CachedPrefix, DecodeState, Sampler, decode_steps,
                                       prefill)
from orchestra.models.kv_cache import (KEY_SLOT_AXIS, VALUE_SLOT_AXIS, KVCache, map_slots,
                                       pad_or_cut)


@functools.partial(jax.jit, static_argnames=("graphdef", "room", "max_new_tokens", "select",
                                             "stop_ids", "pad_id"))
def prefill_rows(graphdef, params, prefix: CachedPrefix, prompt_ids_UP, prompt_mask_UP, keys_K,
                 limit_K, source_K=None, *, room: int = 0, max_new_tokens: int,
                 select: Sampler, stop_ids: tuple[int, ...], pad_id: int) -> DecodeState:
  """k new rows (left-padded prompts after their cached prefixes), each with its first
  token; their cache holds L = C + P slots and `room` empty ones after them (0: the rows
  go into another state's slots; > 0: the state decodes as it is). With `source_K`, the
  prompts and prefixes are U distinct rows and row i continues prompt source_K[i]
  (`decoding.prefill`)."""
  return prefill(nnx.merge(graphdef, params), prefix, prompt_ids_UP, prompt_mask_UP, keys_K,
                 limit_K, room=room, max_new_tokens=max_new_tokens, select=select,
                 stop_ids=stop_ids, pad_id=pad_id, source_B=source_K)


_ROW_FIELDS = ("tokens_BN", "logps_BN", "last_B", "count_B", "limit_B", "active_B", "keys_B")


@functools.partial(jax.jit, donate_argnums=0)
def insert_rows(state: DecodeState, new: DecodeState, slot_K, lead=0) -> DecodeState:
  """`state` with row i of `new` in slot `slot_K[i]`: its L cache slots but the first
  `lead` go to [I - (L - lead), I) (the caller has made I >= L - lead) and the slot's other
  cache entries are masked out. Filler rows of `new` repeat a real row and name its slot
  (they write the same values again).

  `lead`: leading slots that are padding in every new row (a prefix cache hit shorter than
  its bucket, a prompt shorter than its bucket): dropped, so they take no room in the
  cache nor time in any decode step after. A dynamic value: one program for any `lead`.
  One scatter per array, in place in the donated state.
  """
  c, small = state.cache, new.cache
  length, slots = small.mask_BS.shape[1], c.mask_BS.shape[1]
  l_L = jnp.arange(length)
  slots_KL = jnp.where(l_L >= lead, c.index - length + l_L, slots)[None, :]  # S: dropped
  rows_K1 = slot_K[:, None]

  def put(dst, src, axis):
    """dst[slot_K[i], ..., slots_KL[i, l], ...] = src[i, ..., l, ...], the slots on `axis`."""
    at = (rows_K1,) + (slice(None),) * (axis - 1) + (slots_KL,)
    # Advanced indices apart go first: the indexed shape is [k, L, the other two axes].
    return dst.at[at].set(jnp.moveaxis(src, axis, 1).astype(dst.dtype), mode="drop")
  mask_BS = c.mask_BS.at[slot_K].set(False).at[rows_K1, slots_KL].set(small.mask_BS,
                                                                      mode="drop")
  cache = c.replace(keys=tuple(put(d, s, KEY_SLOT_AXIS) for d, s in zip(c.keys, small.keys)),
                    values=tuple(put(d, s, VALUE_SLOT_AXIS)
                                 for d, s in zip(c.values, small.values)), mask_BS=mask_BS,
                    next_position_B=c.next_position_B.at[slot_K].set(small.next_position_B))
  return state.replace(cache=cache, **{f: getattr(state, f).at[slot_K].set(getattr(new, f))
                                       for f in _ROW_FIELDS})


@jax.jit
def take_slots(cache: KVCache, row, slots_L) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
  """Row `row`'s keys and values at the cache slots `slots_L`, per layer [K, E, L] and
  [K, L, E]: new device arrays (a prefix cache entry), valid after the cache is donated."""
  return map_slots(lambda a, axis: jnp.take(a[row], slots_L, axis=axis - 1), cache.keys,
                   cache.values)


@functools.partial(jax.jit, donate_argnums=0)
def stop_rows(state: DecodeState, slot_K) -> DecodeState:
  """`state` with the rows in slots `slot_K` inactive (they decode no further)."""
  return state.replace(active_B=state.active_B.at[slot_K].set(False))


@functools.partial(jax.jit, static_argnames=("graphdef", "select", "stop_ids"),
                   donate_argnums=2)
def decode_chunk(graphdef, params, state: DecodeState, steps, until_a_row_ends, *,
                 select: Sampler, stop_ids: tuple[int, ...]) -> DecodeState:
  """`decoding.decode_steps` over the slots (idle slots are inactive rows)."""
  return decode_steps(nnx.merge(graphdef, params), state, steps, select=select,
                      stop_ids=stop_ids, until_a_row_ends=until_a_row_ends)


@functools.partial(jax.jit, donate_argnums=0)
def shift(state: DecodeState, delta) -> DecodeState:
  """Every slot moved by `delta` (> 0: later, < 0: earlier) and the write index with them;
  slots rolled around from the other end are masked out (the caller keeps live rows
  inside [0, S))."""
  c = state.cache
  keys, values = map_slots(lambda a, axis: jnp.roll(a, delta, axis=axis), c.keys, c.values)
  index = c.index + delta
  visible_S = jnp.arange(c.mask_BS.shape[1]) < index
  return state.replace(cache=c.replace(
      keys=keys, values=values,
      mask_BS=jnp.roll(c.mask_BS, delta, axis=1) & visible_S[None], index=index))


@functools.partial(jax.jit, static_argnames=("rows", "slots", "max_new_tokens", "pad_id"))
def resize(state: DecodeState, *, rows: int, slots: int, max_new_tokens: int, pad_id: int
           ) -> DecodeState:
  """The state with B = `rows` (>= B: idle slots after the old ones), S = `slots` (empty
  cache slots added at the end, or the last ones cut: the caller has moved the live ones
  below `slots`) and N = `max_new_tokens` (>= N: pad columns)."""
  c = state.cache
  keys, values = map_slots(lambda a, axis: pad_or_cut(pad_or_cut(a, 0, rows), axis, slots),
                           c.keys, c.values)
  row = lambda a: pad_or_cut(a, 0, rows)  # noqa: E731
  more_b = rows - c.mask_BS.shape[0]
  idle_keys = jax.vmap(jax.random.key)(jnp.zeros(more_b, jnp.uint32))
  return DecodeState(
      cache=c.replace(keys=keys, values=values,
                      mask_BS=pad_or_cut(row(c.mask_BS), 1, slots),
                      next_position_B=row(c.next_position_B)),
      tokens_BN=pad_or_cut(pad_or_cut(state.tokens_BN, 0, rows, pad_id), 1, max_new_tokens,
                           pad_id),
      logps_BN=pad_or_cut(row(state.logps_BN), 1, max_new_tokens),
      last_B=row(state.last_B), count_B=row(state.count_B), limit_B=row(state.limit_B),
      active_B=row(state.active_B), keys_B=jnp.concatenate([state.keys_B, idle_keys]))
