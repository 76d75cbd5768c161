"""In-process engine: concurrent requests batched onto the JAX KV-cache sampler.

`generate` calls from many coroutines are queued; a worker takes up to
`max_batch_size` of them that share sampling settings, left-pads them into
one batch and runs `orchestra.models.decoding.generate` in a thread, so the
event loop keeps running tools meanwhile. Shapes are bucketed (prompt length
by `orchestra.shapes.bucket_length` over `prompt_bucket`, batch size to a power
of two, new tokens to a multiple of 16)
so a run compiles a handful of programs, not one per request.

A prefix cache (`prefix_cache.py`, on by default) keeps each finished row's keys and
values: a later prompt that starts with a stored sequence (the episode's earlier turns, a
group's shared first prompt) prefills only its new tokens. It is cleared on every weight
update, so a completion never mixes two weight versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.engines.prefix_cache import CachedSequence, PrefixCache
from orchestra.models.decoder import CausalLM
from orchestra.models.decoding import CachedPrefix, Sampler, generate
from orchestra.shapes import bucket_length


def _param_shapes(model: CausalLM) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Each parameter's path ("model/layers/0/...") -> (shape, dtype)."""
  return {"/".join(map(str, path)): (tuple(np.shape(v)), v.dtype)
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _check_same_shapes(served: CausalLM, new: CausalLM) -> None:
  """Raises ValueError unless `new` has exactly the parameters (names and shapes) of `served`."""
  old_shapes, new_shapes = _param_shapes(served), _param_shapes(new)
  shape = lambda shapes, name: str(shapes[name][0]) if name in shapes else "no such parameter"
  for name in sorted(old_shapes.keys() | new_shapes.keys()):
    if shape(old_shapes, name) != shape(new_shapes, name):
      raise ValueError(f"the new weights do not fit the served model (another architecture?): "
                       f"{name}: new {shape(new_shapes, name)}, served {shape(old_shapes, name)}")


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


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
  """

  def __init__(self, model: CausalLM, *, max_batch_size: int = 64, max_wait_s: float = 0.002,
               max_gather_s: float = 0.05, prompt_bucket: int = 64, pad_id: int = 0,
               weight_version: int = 0, prefix_cache_mb: float = 1024,
               prefix_min_saving: int = 512):
    self.model = model
    self.max_batch_size = max_batch_size
    self.max_wait_s, self.max_gather_s = max_wait_s, max_gather_s
    self.prompt_bucket = prompt_bucket
    self.pad_id = pad_id
    self.weight_version = weight_version
    self._pending: list[_Request] = []
    self._worker: asyncio.Task | None = None
    self._rng = random.Random(0)
    self._swap_lock = asyncio.Lock()
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
    """Swaps in new weights between batches.

    `source` is an `nnx.State` of parameters (e.g. `Learner.params`), a
    `CausalLM`, or the path of a Hugging Face folder (loaded in the dtype of the
    weights it replaces). A model or folder whose parameter shapes differ from
    the served model's is refused with a ValueError naming the first mismatch.
    """
    if isinstance(source, (str, os.PathLike)):
      from orchestra.checkpoint.hf import load_hf
      dtype = str(next(iter(_param_shapes(self.model).values()))[1])   # keep the served dtype
      source = await asyncio.to_thread(load_hf, source, dtype)
    if isinstance(source, CausalLM):
      _check_same_shapes(self.model, source)
    async with self._swap_lock:
      if isinstance(source, CausalLM):
        self.model = source
      else:
        graphdef, _, rest = nnx.split(self.model, nnx.Param, ...)
        self.model = nnx.merge(graphdef, source, rest)
      self.weight_version = int(version)
      if self.prefix_cache is not None:
        self.prefix_cache.clear()

  async def _run(self):
    while self._pending:
      await self._gather()
      batch = self._take_batch()
      async with self._swap_lock:
        model, version = self.model, self.weight_version
        try:
          results = await asyncio.to_thread(self._decode, model, batch)
        except Exception as e:  # noqa: BLE001 - every waiting request learns why
          for r in batch:
            if not r.future.done():
              r.future.set_exception(EngineError(f"generation failed: {type(e).__name__}: {e}"))
          continue
      for r, (tokens, logps, reason) in zip(batch, results, strict=True):
        if not r.future.done():
          r.future.set_result(Completion(tokens, logps, reason, version))

  async def _gather(self) -> None:
    """Sleeps `max_wait_s`, then again while the queue grew in the last sleep (see the
    class docstring), until a full batch or `max_gather_s`."""
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + self.max_gather_s, -1
    while (len(self._pending) != seen and len(self._pending) < self.max_batch_size
           and loop.time() < deadline):
      seen = len(self._pending)
      await asyncio.sleep(self.max_wait_s)

  def _take_batch(self) -> list[_Request]:
    """Up to max_batch_size pending requests with the first request's settings."""
    key = _batch_key(self._pending[0].sampling)
    batch = [r for r in self._pending if _batch_key(r.sampling) == key][:self.max_batch_size]
    taken = {id(r) for r in batch}
    self._pending = [r for r in self._pending if id(r) not in taken]
    return batch

  def _decode(self, model: CausalLM, batch: list[_Request]):
    sampling = batch[0].sampling
    rows = _next_pow2(len(batch))
    fill = [batch[i] if i < len(batch) else batch[0] for i in range(rows)]  # filler = row 0
    hits = self._hits(fill, len(batch))
    suffixes = [r.prompt[m:] for r, (_, m) in zip(fill, hits)]
    p = bucket_length(max(len(x) for x in suffixes), self.prompt_bucket)
    n = -(-max(r.sampling.max_tokens for r in batch) // 16) * 16
    ids = np.full((rows, p), self.pad_id, np.int32)
    mask = np.zeros((rows, p), bool)
    for i, suffix in enumerate(suffixes):
      ids[i, p - len(suffix):] = suffix
      mask[i, p - len(suffix):] = True
    select = Sampler(sampling.temperature, sampling.top_k, sampling.top_p)
    store = self._worth_storing(batch)
    out = generate(model, ids, mask, max_new_tokens=n, select=select,
                   seeds=np.asarray([r.seed for r in fill], np.int64),
                   stop_ids=sampling.stop_token_ids, pad_id=self.pad_id,
                   prefix=self._prefix_arrays(hits, model) if any(m for _, m in hits) else None,
                   return_cache=store)
    tokens, logps = jax.device_get(out[:2])
    stops = set(sampling.stop_token_ids)
    results = []
    for i, r in enumerate(batch):
      row_tokens, row_logps = tokens[i, :r.sampling.max_tokens].tolist(), logps[i]
      end = next((j + 1 for j, t in enumerate(row_tokens) if t in stops), None)
      reason = "stop" if end is not None else "length"
      end = end or len(row_tokens)
      results.append((row_tokens[:end], [float(x) for x in row_logps[:end]], reason))
    if store:
      self._store(batch, results, jax.device_get(out[2]))
    return results

  def _worth_storing(self, batch: list[_Request]) -> bool:
    """Whether a row can end long enough (>= `prefix_min_saving` tokens) to be reused."""
    return self.prefix_cache is not None and any(
        len(r.prompt) + r.sampling.max_tokens >= self.prefix_min_saving for r in batch)

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

  def _prefix_arrays(self, hits, model: CausalLM) -> CachedPrefix:
    """The hits' first m tokens of keys/values, right-aligned in [rows, C] (C bucketed)."""
    c = bucket_length(max(m for _, m in hits), self.prompt_bucket)
    cfg = model.config
    first = next(e for e, m in hits if m)
    shape = (len(hits), cfg.num_kv_heads, c, cfg.head_dim)
    keys = [np.zeros(shape, first.keys[0].dtype) for _ in range(cfg.num_layers)]
    values = [np.zeros(shape, first.keys[0].dtype) for _ in range(cfg.num_layers)]
    mask = np.zeros((len(hits), c), bool)
    for i, (entry, m) in enumerate(hits):
      if m:
        for layer in range(cfg.num_layers):
          keys[layer][i, :, c - m:] = entry.keys[layer][:, :m]
          values[layer][i, :, c - m:] = entry.values[layer][:, :m]
        mask[i, c - m:] = True
    return CachedPrefix(tuple(keys), tuple(values), mask,
                        np.asarray([m for _, m in hits], np.int32))

  def _store(self, batch: list[_Request], results: list, cache) -> None:
    """Each request's prompt + the completion tokens it returned that were fed back (all
    but the last generated one), with their keys/values; tokens decoded past the request's
    own `max_tokens` (the batch decodes to a multiple of 16) are not kept."""
    for i, (r, (completion, _, _)) in enumerate(zip(batch, results)):
      real = np.flatnonzero(np.asarray(cache.mask_BS[i], bool))
      fed = min(len(real) - len(r.prompt), len(completion))
      if len(r.prompt) + fed < self.prefix_min_saving:
        continue
      slots = real[:len(r.prompt) + fed]
      self.prefix_cache.insert(CachedSequence(
          np.asarray(r.prompt + completion[:fed], np.int32),
          [np.asarray(k[i][:, slots]) for k in cache.keys],
          [np.asarray(v[i][:, slots]) for v in cache.values]))


def _batch_key(s: SamplingParams):
  return (s.temperature, s.top_k, s.top_p, s.stop_token_ids)
