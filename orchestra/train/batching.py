"""Packing trajectories into the fixed-shape [B, T] batches the update step takes."""

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
