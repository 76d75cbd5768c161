"""Packing trajectories into the fixed-shape [B, T] batches the update step takes.

`pack` pads every row to the longest one. `pack_buckets` splits the rows by length into
at most two arrays, each padded only to its own length, when that costs fewer padded
tokens: `Learner.update` takes the list as one batch (exactly: loss weights over all of
it), and a batch of ~100-token episodes with one 500-token episode no longer computes
500 tokens per row.
"""

from __future__ import annotations

import numpy as np

from orchestra.shapes import bucket_length


def bucket(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def pack(trajectories, advantages=None, *, rows_multiple: int = 1, length_multiple: int = 64,
         max_length: int | None = None) -> dict[str, np.ndarray]:
  """Right-pads trajectories into arrays; extra all-zero rows make B a multiple of `rows_multiple`.

  T is `orchestra.shapes.bucket_length` of the longest sequence (a few shapes, few compiles).

  Each trajectory needs `token_ids`, `loss_mask` and `behaviour_logprobs`
  (an `orchestra.agent.Trajectory` has them); `advantages[i]` is spread over
  every token of trajectory i (the loss mask keeps only policy tokens).
  Sequences longer than `max_length` are cut (their tail tokens leave the loss).
  """
  longest = max(len(t.token_ids) for t in trajectories)
  length = bucket_length(min(longest, max_length or longest), length_multiple)
  rows = bucket(len(trajectories), rows_multiple)
  tokens = np.zeros((rows, length), np.int32)
  attention = np.zeros((rows, length), bool)
  loss_mask = np.zeros((rows, length), bool)
  logp = np.zeros((rows, length), np.float32)
  adv = np.zeros((rows, length), np.float32)
  for i, t in enumerate(trajectories):
    n = min(len(t.token_ids), length)
    tokens[i, :n] = t.token_ids[:n]
    attention[i, :n] = True
    loss_mask[i, :n] = np.asarray(t.loss_mask[:n], bool)
    logp[i, :n] = t.behaviour_logprobs[:n]
    if advantages is not None:
      adv[i, :n] = advantages[i]
  return {"tokens": tokens, "attention_mask": attention, "loss_mask": loss_mask,
          "behaviour_logp": logp, "advantages": adv}


def pack_buckets(trajectories, advantages=None, *, rows_multiple: int = 16,
                 long_rows_multiple: int = 8, length_multiple: int = 64,
                 max_length: int | None = None) -> list[dict[str, np.ndarray]]:
  """`pack` over one or two length buckets: the split (short rows | long rows) that
  minimises padded tokens, rows[short] x T[short] + rows[long] x T[long], where rows are
  rounded up to `rows_multiple` (short) and `long_rows_multiple` (long) and lengths to
  `bucket_length` (so few shapes compile). A single bucket when splitting does not pay."""
  order = sorted(range(len(trajectories)), key=lambda i: len(trajectories[i].token_ids))
  cap = max_length or max(len(t.token_ids) for t in trajectories)
  lengths = [bucket_length(min(len(trajectories[i].token_ids), cap), length_multiple)
             for i in order]
  n = len(order)

  def cost(k):                  # rows order[:k] in the short bucket, the rest long
    short = bucket(k, rows_multiple) * lengths[k - 1] if k else 0
    long = bucket(n - k, long_rows_multiple) * lengths[-1] if k < n else 0
    return short + long

  splits = [k for k in range(1, n) if lengths[k - 1] < lengths[-1]]   # at a length change
  best = min(splits + [n], key=lambda k: (cost(k), -k))
  single = bucket(n, rows_multiple) * lengths[-1]
  if best == n or cost(best) >= single:
    return [pack(trajectories, advantages, rows_multiple=rows_multiple,
                 length_multiple=length_multiple, max_length=max_length)]
  parts = [order[:best], order[best:]]
  multiples = [rows_multiple, long_rows_multiple]
  return [pack([trajectories[i] for i in part],
               None if advantages is None else [advantages[i] for i in part],
               rows_multiple=m, length_multiple=length_multiple, max_length=max_length)
          for part, m in zip(parts, multiples, strict=True)]
