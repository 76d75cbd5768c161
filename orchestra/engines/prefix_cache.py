"""Prefix cache for the in-process engine: a turn re-uses the keys/values of what came before.

An agent episode's turn k+1 prompt is its turn-k prompt + the turn-k completion + the
tool observation, and a GRPO group's episodes share their first prompt. After each decode
the engine stores every row's sequence (prompt + completion, less the last token, which
was never fed back) with its per-layer keys and values; a new prompt takes the stored
sequence with which it shares the longest common prefix, reuses those m tokens' keys and
values, and prefills only the rest. Keys carry RoPE at their absolute positions, and
position m onwards depends only on tokens < m, so reuse is exact (the log-probs equal the
uncached path's up to float summation order).

Bounded: least-recently-used entries are evicted past `max_bytes`, and a sequence that is
a prefix of a newly stored one is dropped (the new one covers it). The engine clears the
cache whenever its weights change.

The tokens and the lookup live on the host; the keys and values stay on the device they
were computed on (`prefix_keys_values` lays hits out for a prefill there), so a turn moves
no keys through host memory: on a GPU, a 4k-token row of an 8B model is ~0.6 GB each way.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from orchestra.models.kv_cache import map_slots, pad_or_cut


@dataclasses.dataclass
class CachedSequence:
  """One stored sequence: tokens [L] and per-layer keys [K, E, L'] and values [K, L', E]
  (`KVCache`'s layout, one row), L' >= L (the first L slots are the tokens'; the engine
  keeps them on its device)."""

  tokens: np.ndarray
  keys: Sequence[Any]
  values: Sequence[Any]

  @property
  def nbytes(self) -> int:
    return sum(a.nbytes for a in self.keys) + sum(a.nbytes for a in self.values)


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
  """The number of leading tokens `a` and `b` share."""
  n = min(len(a), len(b))
  differ = np.flatnonzero(a[:n] != b[:n])
  return int(differ[0]) if differ.size else n


class PrefixCache:
  """LRU store of `CachedSequence`s with longest-common-prefix lookup.

  Args:
    max_bytes: keys + values kept at most (older entries are evicted).
    min_tokens: shorter matches are not worth a reuse and count as misses.
  """

  def __init__(self, max_bytes: int, min_tokens: int = 32):
    self.max_bytes, self.min_tokens = int(max_bytes), int(min_tokens)
    self._entries: collections.OrderedDict[int, CachedSequence] = collections.OrderedDict()
    self._next_id = 0
    self._lock = threading.Lock()      # the engine decodes in a worker thread
    self.nbytes = 0
    self.reused_tokens = 0          # prompt tokens served from the cache (`count`)
    self.prompt_tokens = 0          # prompt tokens decoded (`count`)

  def __len__(self) -> int:
    return len(self._entries)

  def lookup(self, prompt: np.ndarray) -> tuple[CachedSequence | None, int]:
    """(entry, m): the entry sharing the longest prefix with `prompt` and the m tokens to
    reuse (at most len(prompt) - 1: the last prompt token is always computed, for its
    logits); (None, 0) below `min_tokens`."""
    with self._lock:
      return self._lookup(prompt)

  def _lookup(self, prompt: np.ndarray) -> tuple[CachedSequence | None, int]:
    best, best_m, best_id = None, 0, None
    for entry_id, entry in self._entries.items():
      m = common_prefix_length(entry.tokens, prompt)
      if m > best_m:
        best, best_m, best_id = entry, m, entry_id
    best_m = min(best_m, len(prompt) - 1)
    if best is None or best_m < self.min_tokens:
      return None, 0
    self._entries.move_to_end(best_id)
    return best, best_m

  def count(self, prompt_tokens: int, reused_tokens: int) -> None:
    """Adds a batch's prompt tokens and the ones it took from the cache to the totals."""
    self.prompt_tokens += prompt_tokens
    self.reused_tokens += reused_tokens

  def insert(self, entry: CachedSequence) -> None:
    """Stores `entry`, dropping entries it extends, then evicts down to `max_bytes`."""
    if entry.nbytes > self.max_bytes:
      return
    with self._lock:
      self._insert(entry)

  def _insert(self, entry: CachedSequence) -> None:
    for entry_id, old in list(self._entries.items()):
      if len(old.tokens) <= len(entry.tokens) and common_prefix_length(
          old.tokens, entry.tokens) == len(old.tokens):
        self._drop(entry_id)
    self._entries[self._next_id] = entry
    self._next_id += 1
    self.nbytes += entry.nbytes
    while self.nbytes > self.max_bytes:
      self._drop(next(iter(self._entries)))

  def _drop(self, entry_id: int) -> None:
    self.nbytes -= self._entries.pop(entry_id).nbytes

  def clear(self) -> None:
    with self._lock:
      self._entries.clear()
      self.nbytes = 0


def prefix_keys_values(hits: Sequence[tuple[CachedSequence | None, int]], length: int
                       ) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
  """Per layer keys [rows, K, E, `length`] and values [rows, K, `length`, E] holding each
  hit's first m tokens in its last m slots (`decoding.CachedPrefix`'s right-aligned
  layout), built on device: the entries never leave it. Slots before a row's m tokens, and
  rows without a hit (given another row's arrays), hold finite values that the prefix mask
  hides."""
  placed = {}
  for entry, m in hits:
    if m and (id(entry), m) not in placed:
      placed[id(entry), m] = _right_aligned(tuple(entry.keys), tuple(entry.values),
                                            np.int32(m), length=length)
  some = next(iter(placed.values()))
  return _stack_rows(tuple(placed.get((id(entry), m), some) for entry, m in hits))


@functools.partial(jax.jit, static_argnames="length")
def _right_aligned(keys, values, used, *, length: int):
  """One row's per-layer keys [K, E, L'] and values [K, L', E] cut or zero-padded to
  `length` slots, then rolled so that their first `used` slots end at the last one."""
  def place(a, axis):
    return jnp.roll(pad_or_cut(a, axis, length), length - used, axis=axis)
  return map_slots(place, keys, values, batched=False)


@jax.jit
def _stack_rows(rows):
  """((keys, values) per row) -> (keys, values) per layer, rows stacked first."""
  keys, values = zip(*rows)
  return (tuple(jnp.stack(layer) for layer in zip(*keys)),
          tuple(jnp.stack(layer) for layer in zip(*values)))
