"""Host side of continuous batching: which request holds which decode slot.

A `SlotBatch` is one `continuous_batching` decode state with the weights and sampling
settings it was made with. `admit` prefills new requests and puts them in free slots;
`run_chunk` decodes up to `chunk_steps` steps (stopping at the first row to end while
requests wait for a slot) and returns the rows that ended, so the engine can answer them
and refill their slots at once, instead of waiting for the batch's longest row.

Cache bookkeeping: rows share one write index I; row j's tokens lie in slots
[I - span_j, I). Before a chunk the cache is shifted so that I >= every live span and
`chunk_steps` slots are free after I (when fewer are, and a shift frees more), and grown
(B, S or N, to a bucket) when a request needs more than it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from orchestra.engines.base import SamplingParams
from orchestra.models import continuous_batching as cb
from orchestra.models.decoder import CausalLM
from orchestra.models.decoding import CachedPrefix, Sampler
from orchestra.shapes import bucket_length, next_pow2


@dataclasses.dataclass
class EndedRow:
  """A request whose row ended: its tokens, their log-probs, why it ended, and (when the
  batch keeps them) its cached tokens' keys/values: (L, keys, values), per layer
  [K, E, L'] and [K, L', E] device arrays (L' >= L, bucketed) whose first L slots hold the
  row's real tokens in order: its prompt, then every generated token but the last (never
  fed back)."""
  request: Any
  tokens: list[int]
  logps: list[float]
  reason: str
  cache_row: tuple[int, tuple[jax.Array, ...], tuple[jax.Array, ...]] | None = None


def _leading_padding(mask_KL: np.ndarray) -> int:
  """Leading slots that no row of `mask_KL` uses (a bucket's padding common to all)."""
  used_L = mask_KL.any(axis=0)
  return int(np.argmax(used_L)) if used_L.any() else 0


def _token_columns(max_tokens: int) -> int:
  """N, the decode state's token columns for rows of up to `max_tokens`: a multiple of 16,
  so few programs compile."""
  return -(-max_tokens // 16) * 16


class SlotBatch:
  """Continuous batching over `rows` slots of one model version and sampling setting.

  Args:
    model: the weights every row of this batch samples from.
    version: their weight version (reported with each completion).
    sampling: the batch's sampling settings (temperature, top-k/p, stop ids).
    max_rows: most slots (requests decoded at once).
    pad_id: padding token id.
    prompt_bucket: cache lengths are `bucket_length(n, prompt_bucket)`.
    chunk_steps: most decode steps between two visits of the host.
    keep_cache_row: `(request, tokens generated) -> bool`: whether to return an ended
      row's keys/values (for a prefix cache); None: never.
  """

  def __init__(self, model: CausalLM, version: int, sampling: SamplingParams, *,
               max_rows: int, pad_id: int, prompt_bucket: int, chunk_steps: int = 32,
               keep_cache_row: Callable[[Any, int], bool] | None = None):
    self.config, self.version, self.sampling = model.config, version, sampling
    self.graphdef, self.params = nnx.split(model)
    self.dtype = model.model.dtype
    self.select = Sampler(sampling.temperature, sampling.top_k, sampling.top_p)
    self.stop_ids = tuple(int(s) for s in sampling.stop_token_ids)
    self.max_rows, self.pad_id, self.bucket = max_rows, pad_id, prompt_bucket
    self.chunk_steps, self.keep_cache_row = chunk_steps, keep_cache_row
    self.requests: list[Any] = []       # per slot: its request, None when idle
    self.span: list[int] = []           # slots from the row's first one to the write index
    self.final: list[int] = []          # the most slots the row can ever span
    self.index = 0
    self.state = None                   # made at the first admission, sized for it

  @property
  def live(self) -> int:
    return sum(r is not None for r in self.requests)

  def free_slots(self) -> int:
    """Slots a new request can take now, counting the growth to `max_rows`."""
    return self.max_rows - self.live

  def admit(self, fill: list, count: int, prompt_ids_UP: np.ndarray,
            prompt_mask_UP: np.ndarray, prefix: CachedPrefix | None,
            source_K: np.ndarray | None = None) -> None:
    """Prefills the k = len(`fill`) requests and puts the first `count` in free slots; the
    rest are fillers repeating `fill[0]`. Request i's prompt is row source_K[i] of
    `prompt_ids_UP` (left-padded, after `prefix`), row i when `source_K` is None.

    With rows live, the new rows are prefilled alone and copied into free slots
    (`insert_rows`; fillers write `fill[0]`'s values to its slot again). With none, the
    prefilled batch, made with room for the decode steps, becomes the state: no copy of
    the cache, nor an empty one to copy into (fillers are idle slots)."""
    k, requests = len(fill), fill[:count]
    if prefix is None:
      prefix = CachedPrefix.empty(self.config, len(prompt_ids_UP), self.dtype)
    full = prefix.mask_BC.shape[1] + prompt_ids_UP.shape[1]
    lead = _leading_padding(np.concatenate([np.asarray(prefix.mask_BC, bool),
                                            np.asarray(prompt_mask_UP, bool)], axis=1))
    length = full - lead                                 # slots the rows keep
    limit_K = np.asarray([r.sampling.max_tokens for r in fill], np.int32)
    limits = limit_K[:count]
    fresh = not self.live
    if fresh:
      width = _token_columns(int(limits.max()))
      limit_K[count:] = 1                              # fillers: done at their first token
    else:
      self._make_room(count, length + int(limits.max()), int(limits.max()), length)
      width = self.state.tokens_BN.shape[1]
    new = cb.prefill_rows(
        self.graphdef, self.params, prefix, prompt_ids_UP, prompt_mask_UP,
        jax.vmap(jax.random.key)(np.asarray([r.seed for r in fill], np.uint32)), limit_K,
        source_K, room=width if fresh else 0, max_new_tokens=width, select=self.select,
        stop_ids=self.stop_ids, pad_id=self.pad_id)
    if fresh:
      self.state, self.index = new, full
      self.requests, self.span, self.final = [None] * k, [0] * k, [0] * k
      slots = list(range(count))
    else:
      slots = [j for j, r in enumerate(self.requests) if r is None][:count]
      slot_k = np.asarray(slots + [slots[0]] * (k - count), np.int32)   # fillers: row 0
      self.state = cb.insert_rows(self.state, new, slot_k, np.int32(lead))
    for j, r, n in zip(slots, requests, limits):
      self.requests[j], self.span[j], self.final[j] = r, length, length + int(n)

  def cancel(self, slots: list[int]) -> None:
    """Stops the rows in `slots` (their requests were cancelled) and frees the slots."""
    self.state = cb.stop_rows(self.state, np.asarray(slots, np.int32))
    for j in slots:
      self.requests[j] = None

  def run_chunk(self, requests_waiting: bool) -> list[EndedRow]:
    """Decodes up to `chunk_steps` steps (fewer when the cache's free slots run out; until
    the first row ends when `requests_waiting`); returns the rows that ended."""
    live = [j for j, r in enumerate(self.requests) if r is not None]
    if not live:
      return []
    need, slots = self._longest_span(), self.state.cache.mask_BS.shape[1]
    enough = bucket_length(max(self.final[j] for j in live), self.bucket)
    if 2 * enough <= slots:                            # the long rows have left: shrink S
      self._arrange(need, at_least_free=slots)         # live rows to [0, need)
      self._resize(self.state.cache.mask_BS.shape[0], enough, self.state.tokens_BN.shape[1])
    self._arrange(need)
    steps = min(self.chunk_steps, self.state.cache.mask_BS.shape[1] - self.index)
    if steps < 1:
      raise RuntimeError(f"internal: no free cache slot after index {self.index} for rows of "
                         f"spans {self.span} (at most {self.final})")
    self.state = cb.decode_chunk(self.graphdef, self.params, self.state, np.int32(steps),
                                 np.bool_(requests_waiting), select=self.select,
                                 stop_ids=self.stop_ids)
    index, active = jax.device_get((self.state.cache.index, self.state.active_B))
    ran, self.index = int(index) - self.index, int(index)
    for j in live:
      self.span[j] += ran
    return self._take_ended([j for j in live if not active[j]])

  def _take_ended(self, ended: list[int]) -> list[EndedRow]:
    if not ended:
      return []
    tokens, logps, count, mask_BS = jax.device_get((
        self.state.tokens_BN, self.state.logps_BN, self.state.count_B, self.state.cache.mask_BS))
    rows = []
    for j in ended:
      n = int(count[j])
      row_tokens = tokens[j, :n].tolist()
      reason = "stop" if n and row_tokens[-1] in self.stop_ids else "length"
      keep = self.keep_cache_row is not None and self.keep_cache_row(self.requests[j], n)
      rows.append(EndedRow(self.requests[j], row_tokens, [float(x) for x in logps[j, :n]],
                           reason, self._cache_row(j, mask_BS[j]) if keep else None))
      self.requests[j] = None
    return rows

  def _cache_row(self, j: int, mask_S: np.ndarray):
    """(L, keys, values) of row j's L real slots, copied on device (`EndedRow.cache_row`);
    the copy's length is bucketed (the last slot repeated) so few programs compile."""
    real = np.flatnonzero(mask_S).astype(np.int32)
    slots = np.full(bucket_length(len(real), self.bucket), real[-1], np.int32)
    slots[:len(real)] = real
    keys, values = cb.take_slots(self.state.cache, np.int32(j), slots)
    return len(real), keys, values

  def _longest_span(self) -> int:
    return max((sp for sp, r in zip(self.span, self.requests) if r is not None), default=0)

  def _make_room(self, new_rows: int, span: int, width: int, length: int) -> None:
    """Grows B, S and N as the admitted rows need, then places the write index at or past
    `length` (their prefilled slots) and every live span."""
    rows = min(self.max_rows, next_pow2(self.live + new_rows))
    slots, width = bucket_length(span, self.bucket), _token_columns(width)
    b, s = self.state.cache.mask_BS.shape
    self._resize(max(b, rows), max(s, slots), max(self.state.tokens_BN.shape[1], width))
    self._arrange(max(length, self._longest_span()))

  def _resize(self, rows: int, slots: int, width: int) -> None:
    b = self.state.cache.mask_BS.shape[0]
    if (rows, slots, width) != (b, self.state.cache.mask_BS.shape[1],
                                self.state.tokens_BN.shape[1]):
      self.state = cb.resize(self.state, rows=rows, slots=slots, max_new_tokens=width,
                             pad_id=self.pad_id)
      self._grow_rows(rows)

  def _grow_rows(self, rows: int) -> None:
    more = rows - len(self.requests)
    self.requests += [None] * more
    self.span += [0] * more
    self.final += [0] * more

  def _arrange(self, need: int, at_least_free: int | None = None) -> None:
    """Shifts the cache so that the write index is >= `need` (the longest span) and, when
    fewer than `at_least_free` slots are free after it (default: the steps the next chunk
    can use, `chunk_steps` or the most any live row has left), as low as `need` allows."""
    free = self.state.cache.mask_BS.shape[1] - self.index
    if at_least_free is None:
      at_least_free = min([self.chunk_steps] + [f - sp for f, sp, r in zip(
          self.final, self.span, self.requests) if r is not None])
    target = self.index
    if self.index < need or (free < at_least_free and self.index > need):
      target = need
    if target != self.index:
      self.state = cb.shift(self.state, np.int32(target - self.index))
      self.index = target
