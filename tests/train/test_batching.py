"""Packing trajectories into padded arrays, in one or two length buckets."""

import types

import numpy as np

from orchestra.train.batching import pack, pack_buckets


def traj(n, first=1):
  ids = list(range(first, first + n))
  return types.SimpleNamespace(token_ids=ids, loss_mask=[0] * (n // 2) + [1] * (n - n // 2),
                               behaviour_logprobs=[-0.5] * n)


def rows_of(batches):
  """Each real row's token ids (in any order), and the advantage it carries."""
  out = []
  for b in batches:
    for tokens, attention, adv in zip(b["tokens"], b["attention_mask"], b["advantages"]):
      if attention.any():
        out.append((tuple(tokens[attention]), float(adv[0])))
  return sorted(out)


def test_short_rows_and_one_long_row_go_in_two_buckets_with_nothing_lost():
  trajs = [traj(100, first=10 * i) for i in range(30)] + [traj(500)]
  adv = list(np.linspace(-1, 1, 31))
  batches = pack_buckets(trajs, adv, rows_multiple=16, long_rows_multiple=8)
  assert [b["tokens"].shape for b in batches] == [(32, 128), (8, 512)]
  assert rows_of(batches) == rows_of([pack(trajs, adv)])
  padded = sum(b["tokens"].size for b in batches)
  assert padded == pack(trajs, adv, rows_multiple=16)["tokens"].size / 2     # 8192 vs 16384


def test_rows_of_similar_length_stay_one_bucket():
  trajs = [traj(90 + i) for i in range(20)]
  batches = pack_buckets(trajs, [1.0] * 20, rows_multiple=16, long_rows_multiple=8)
  assert len(batches) == 1 and batches[0]["tokens"].shape == (32, 128)
  assert rows_of(batches) == rows_of([pack(trajs, [1.0] * 20)])


def test_max_length_cuts_rows_in_every_bucket():
  trajs = [traj(60)] * 20 + [traj(900)]
  batches = pack_buckets(trajs, None, rows_multiple=16, long_rows_multiple=8, max_length=512)
  assert max(b["tokens"].shape[1] for b in batches) == 512
  assert all(b["loss_mask"].shape == b["tokens"].shape for b in batches)
