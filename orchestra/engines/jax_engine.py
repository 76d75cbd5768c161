"""In-process engine: concurrent requests decoded with continuous batching on the JAX sampler.

`generate` calls from many coroutines are queued. A worker keeps one `SlotBatch` (decode
slots over one KV cache, `slot_batch.py`) and alternates, in a thread so the event loop
keeps running tools meanwhile: admit waiting requests that share the batch's sampling
settings into free slots (prefilled in a batch of their own), then decode a chunk of
steps. A row that ends is answered at the end of its chunk and its slot refilled, so
short completions never wait for the batch's longest row (continuous batching). A request
whose caller stops waiting (a cancelled `generate`, e.g. a generation timeout) leaves its
slot at the next chunk.
Shapes are bucketed (cache length by `orchestra.shapes.bucket_length` over
`prompt_bucket`, rows to a power of two, token columns to a multiple of 16) so a run
compiles a handful of programs, not one per request.

A prefix cache (`prefix_cache.py`, on by default) keeps each finished row's keys and
values, on the device (never copied to the host and back): a later prompt that starts
with a stored sequence (the episode's earlier turns, a group's shared first prompt)
prefills only its new tokens. Weights swap between chunks:
rows in flight finish on the weights they started with (and report that version), new
requests wait for them and start on the new weights; the prefix cache is cleared at every
update, so a completion never mixes two weight versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import nnx

from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.engines.prefix_cache import CachedSequence, PrefixCache, prefix_keys_values
from orchestra.engines.slot_batch import EndedRow, SlotBatch
from orchestra.models.decoder import CausalLM
from orchestra.models.decoding import CachedPrefix, distinct_rows
from orchestra.shapes import bucket_length, next_pow2


def _param_shapes(model: CausalLM) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Each parameter's path ("model/layers/0/...") -> (shape, dtype)."""
  return {"/".join(map(str, path)): (tuple(np.shape(v)), v.dtype)
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _check_same_shapes(served: CausalLM, new: CausalLM) -> None:
  """Raises ValueError unless `new` has exactly the parameters (names and shapes) of `served`.
  The same config builds the same parameters: only models of different configs are compared
  parameter by parameter (a rollout server reloads the same config every step)."""
  if served.config == new.config:
    return
  old_shapes, new_shapes = _param_shapes(served), _param_shapes(new)
  shape = lambda shapes, name: str(shapes[name][0]) if name in shapes else "no such parameter"
  for name in sorted(old_shapes.keys() | new_shapes.keys()):
    if shape(old_shapes, name) != shape(new_shapes, name):
      raise ValueError(f"the new weights do not fit the served model (another architecture?): "
                       f"{name}: new {shape(new_shapes, name)}, served {shape(old_shapes, name)}")


@dataclasses.dataclass
class _Request:
  prompt: list[int]
  sampling: SamplingParams
  seed: int
  future: asyncio.Future


class JaxEngine:
  """Batched generation on a `CausalLM` held in this process.

  Args:
    model: the policy.
    max_batch_size: most requests decoded together.
    max_wait_s: the worker waits this long for more requests before a batch, and again
      while more keep arriving (up to `max_gather_s` in all, or a full batch): requests
      over HTTP arrive one parse at a time, and decoding the first few alone would split
      one wave into several batches, each a decode (and a compile) of its own.
    prompt_bucket: prompts are left-padded to `bucket_length(longest, prompt_bucket)`.
    pad_id: padding token id.
    weight_version: version tag of the initial weights.
    prefix_cache_mb: keys/values kept for prefix reuse (0: no prefix cache).
    prefix_min_saving: a batch takes its prefix cache hits only when they shorten its
      padded prefill by at least this many tokens and by half: each new (prefix, suffix)
      shape is a compilation (~1-2 s on CPU), which short prompts never pay back.
    chunk_steps: most decode steps between two admissions of waiting requests (a chunk
      also ends when a row ends while requests wait for a slot).
    refill: continuous batching: waiting requests take the slots of rows that ended while
      the others decode on. False: static batching, new requests wait until every row of
      the batch has ended (for comparisons: `bench/rollout.py --sections=continuous`).
  """

  def __init__(self, model: CausalLM, *, max_batch_size: int = 64, max_wait_s: float = 0.002,
               max_gather_s: float = 0.05, prompt_bucket: int = 64, pad_id: int = 0,
               weight_version: int = 0, prefix_cache_mb: float = 1024,
               prefix_min_saving: int = 512, chunk_steps: int = 32, refill: bool = True):
    self.model = model
    self.chunk_steps, self.refill = chunk_steps, refill
    self.max_batch_size = max_batch_size
    self.max_wait_s, self.max_gather_s = max_wait_s, max_gather_s
    self.prompt_bucket = prompt_bucket
    self.pad_id = pad_id
    self.weight_version = weight_version
    self._owns_model = False                    # True once the weights come from a folder
    self._retired: list[CausalLM] = []          # replaced models of ours a batch still uses
    self._pending: list[_Request] = []
    self._worker: asyncio.Task | None = None
    self._batch: SlotBatch | None = None
    self._rng = random.Random(0)
    self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb else None
    self.prefix_min_saving = prefix_min_saving

  async def generate(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> Completion:
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
      raise EngineError("empty prompt")
    vocab = self.model.config.vocab_size
    if min(prompt) < 0 or max(prompt) >= vocab:
      raise EngineError(f"prompt token ids must be in [0, {vocab})")
    seed = sampling.seed if sampling.seed is not None else self._rng.getrandbits(31)
    future = asyncio.get_running_loop().create_future()
    self._pending.append(_Request(prompt, sampling, seed, future))
    if self._worker is None or self._worker.done():
      self._worker = asyncio.create_task(self._run())
    return await future

  async def update_weights(self, source: Any, version: int) -> None:
    """Swaps in new weights for requests not yet started (rows in flight finish on the
    weights they started with).

    `source` is an `nnx.State` of parameters (e.g. `Learner.params`), a
    `CausalLM`, or the path of a Hugging Face folder (loaded in the dtype of the
    weights it replaces). A model or folder whose parameter shapes differ from
    the served model's is refused with a ValueError naming the first mismatch.

    Replaced weights are freed at once (a rollout server's memory stays flat): each nnx
    Param sits in a reference cycle, so dropping a model leaves its arrays to Python's
    cyclic GC. Weights this engine loaded from a folder are its own, and their arrays are
    deleted as soon as no batch samples from them; a caller's model is released by one
    collection at the first reload from a folder (a full collection costs ~0.15 s in a
    warmed-up server, which holds every compiled program's objects).
    """
    loaded = isinstance(source, (str, os.PathLike))
    if loaded:
      from orchestra.checkpoint.hf import load_hf
      dtype = str(self.model.model.embed[...].dtype)                   # keep the served dtype
      source = await asyncio.to_thread(load_hf, source, dtype)
    if isinstance(source, CausalLM):
      _check_same_shapes(self.model, source)
    old, owned = self.model, self._owns_model  # no await from here on: the swap is atomic
    if isinstance(source, CausalLM):
      self.model = source
    else:
      graphdef, _, rest = nnx.split(self.model, nnx.Param, ...)
      self.model = nnx.merge(graphdef, source, rest)
    self._owns_model = loaded
    self.weight_version = int(version)
    if self.prefix_cache is not None:
      self.prefix_cache.clear()
    if owned:
      self._retired.append(old)
      self._free_retired()
    elif loaded:
      del old
      gc.collect()

  def _free_retired(self) -> None:
    """Deletes the parameter arrays of replaced models the engine loaded itself, once no
    batch can still be sampling from them."""
    if self._retired and self._batch is None:   # (called whenever a batch drains)
      served = {id(p[...]) for _, p in nnx.to_flat_state(nnx.state(self.model, nnx.Param))}
      for model in self._retired:
        for _, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
          if id(param[...]) not in served:    # (an update may hand back the same arrays)
            param[...].delete()
      self._retired.clear()

  async def _run(self):
    while self._pending or (self._batch is not None and self._batch.live):
      if self._batch is None or not self._batch.live:
        await self._gather()
      cancelled = self._cancelled_slots()
      admitted = self._take_admissions(freed=len(cancelled))
      batch = self._batch
      if batch is None:                 # every waiting request was cancelled meanwhile
        continue
      try:
        ended = await asyncio.to_thread(self._step, batch, admitted, cancelled)
      except Exception as e:  # noqa: BLE001 - every waiting request learns why
        for r in admitted + [r for r in batch.requests if r is not None]:
          if not r.future.done():
            r.future.set_exception(EngineError(f"generation failed: {type(e).__name__}: {e}"))
        self._batch = None
        self._free_retired()
        continue
      for row in ended:
        if row.cache_row is not None and batch.version == self.weight_version:
          self._store(row)                # (an older version's keys never enter the cache)
        if not row.request.future.done():
          row.request.future.set_result(Completion(row.tokens, row.logps, row.reason,
                                                   batch.version))
      if not batch.live and self._batch is batch:
        self._batch = None              # the next requests get a cache of their own size
        self._free_retired()

  async def _gather(self) -> None:
    """Sleeps `max_wait_s`, then again while the queue grew in the last sleep (see the
    class docstring), until a full batch or `max_gather_s`."""
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + self.max_gather_s, -1
    while (len(self._pending) != seen and len(self._pending) < self.max_batch_size
           and loop.time() < deadline):
      seen = len(self._pending)
      await asyncio.sleep(self.max_wait_s)

  def _cancelled_slots(self) -> list[int]:
    """Slots of the current batch whose caller stopped waiting (e.g. a generation timeout
    cancelled it): they are stopped and refilled instead of decoding to their limit."""
    if self._batch is None:
      return []
    return [j for j, r in enumerate(self._batch.requests)
            if r is not None and r.future.cancelled()]

  def _take_admissions(self, freed: int = 0) -> list[_Request]:
    """Waiting requests that can join the current batch now (its sampling settings and
    weight version, up to its free slots and the `freed` ones of cancelled rows); a new
    batch when the old one has drained. Requests cancelled while waiting are dropped."""
    self._pending = [r for r in self._pending if not r.future.cancelled()]
    batch = self._batch
    if batch is None or (not batch.live and self._pending and (
        batch.version != self.weight_version
        or _batch_key(batch.sampling) != _batch_key(self._pending[0].sampling))):
      if not self._pending:
        return []
      batch = self._batch = SlotBatch(
          self.model, self.weight_version, self._pending[0].sampling, max_rows=self.max_batch_size,
          pad_id=self.pad_id, prompt_bucket=self.prompt_bucket, chunk_steps=self.chunk_steps,
          keep_cache_row=self._worth_storing if self.prefix_cache is not None else None)
    if batch.version != self.weight_version or (batch.live and not self.refill):
      return []                                   # rows on the old weights finish first
    key = _batch_key(batch.sampling)
    taken = [r for r in self._pending
             if _batch_key(r.sampling) == key][:batch.free_slots() + freed]
    ids = {id(r) for r in taken}
    self._pending = [r for r in self._pending if id(r) not in ids]
    return taken

  def _step(self, batch: SlotBatch, admitted: list[_Request], cancelled: list[int]
            ) -> list[EndedRow]:
    """Frees the `cancelled` slots, admits `admitted` into `batch` (with their prefix cache
    hits) and decodes one chunk; returns the rows that ended."""
    if cancelled:
      batch.cancel(cancelled)
    if admitted:
      self._admit(batch, admitted)
    return batch.run_chunk(requests_waiting=self.refill and bool(self._pending))

  def _admit(self, batch: SlotBatch, admitted: list[_Request]) -> None:
    rows = next_pow2(len(admitted))
    fill = admitted + [admitted[0]] * (rows - len(admitted))    # filler = row 0
    hits = self._hits(fill, len(admitted))
    suffixes = [tuple(r.prompt[m:]) for r, (_, m) in zip(fill, hits)]
    # requests with the same prompt and hit (a GRPO group, the fillers) prefill it once
    first_U, source_K = distinct_rows([(id(e), m, x) for (e, m), x in zip(hits, suffixes)])
    hits, suffixes = [hits[i] for i in first_U], [suffixes[i] for i in first_U]
    p = bucket_length(max(len(x) for x in suffixes), self.prompt_bucket)
    ids = np.full((len(first_U), p), self.pad_id, np.int32)
    mask = np.zeros((len(first_U), p), bool)
    for i, suffix in enumerate(suffixes):
      ids[i, p - len(suffix):] = suffix
      mask[i, p - len(suffix):] = True
    prefix = self._prefix_arrays(hits) if any(m for _, m in hits) else None
    batch.admit(fill, len(admitted), ids, mask, prefix, source_K)

  def _worth_storing(self, request: _Request, num_tokens: int) -> bool:
    """Whether a row ended long enough (>= `prefix_min_saving` tokens) to be reused."""
    return len(request.prompt) + num_tokens - 1 >= self.prefix_min_saving

  def _hits(self, fill: list[_Request], real_rows: int) -> list[tuple[CachedSequence | None, int]]:
    """Each row's prefix cache hit (entry, tokens reused), or none at all when they would
    not shrink the batch's padded prefill by half and by `prefix_min_saving` tokens (rows
    without a hit still prefill in full)."""
    misses = [(None, 0)] * len(fill)
    if self.prefix_cache is None:
      return misses
    hits = [self.prefix_cache.lookup(np.asarray(r.prompt, np.int32)) for r in fill]
    full = bucket_length(max(len(r.prompt) for r in fill), self.prompt_bucket)
    suffix = bucket_length(max(len(r.prompt) - m for r, (_, m) in zip(fill, hits)),
                           self.prompt_bucket)
    worth = 2 * suffix <= full and full - suffix >= self.prefix_min_saving
    self.prefix_cache.count(sum(len(r.prompt) for r in fill[:real_rows]),     # not fillers
                            sum(m for _, m in hits[:real_rows]) if worth else 0)
    return hits if worth else misses

  def _prefix_arrays(self, hits) -> CachedPrefix:
    """The hits' first m tokens of keys/values, right-aligned in [rows, C] (C bucketed)."""
    c = bucket_length(max(m for _, m in hits), self.prompt_bucket)
    keys, values = prefix_keys_values(hits, c)
    mask = np.zeros((len(hits), c), bool)
    for i, (_, m) in enumerate(hits):
      if m:
        mask[i, c - m:] = True
    return CachedPrefix(keys, values, mask, np.asarray([m for _, m in hits], np.int32))

  def _store(self, row: EndedRow) -> None:
    """The request's prompt + the completion tokens that were fed back (all but the last
    generated one), with their keys/values (left on device)."""
    r, (used, keys, values) = row.request, row.cache_row
    tokens = (r.prompt + row.tokens)[:used]
    self.prefix_cache.insert(CachedSequence(np.asarray(tokens, np.int32), keys, values))


def _batch_key(s: SamplingParams):
  return (s.temperature, s.top_k, s.top_p, s.stop_token_ids)
