"""The reference a sampler's log-probs are checked against: one full forward pass."""

import numpy as np
from flax import nnx

from orchestra.rl import token_logprobs
from orchestra.shapes import bucket_length


@nnx.jit
def _logprobs(model, ids_BT, mask_BT):
  return token_logprobs(model(ids_BT, mask_BT), ids_BT)


def forward_logprobs(model, sequences: list[list[int]]) -> list[np.ndarray]:
  """log p(token t | tokens < t) of each sequence (0 at t = 0), from one jitted forward pass
  over all of them, right-padded to their length bucket (`orchestra.shapes.bucket_length`;
  causal attention: padding after a token never changes it). One compiled program serves
  every call of the same shape, where an eager forward per sequence compiled each operation
  anew for each length."""
  width = bucket_length(max(map(len, sequences)))
  ids_BT = np.zeros((len(sequences), width), np.int32)
  mask_BT = np.zeros((len(sequences), width), bool)
  for row, seq in enumerate(sequences):
    ids_BT[row, :len(seq)], mask_BT[row, :len(seq)] = seq, True
  logp_BT = np.asarray(_logprobs(model, ids_BT, mask_BT))
  return [logp_BT[row, :len(seq)] for row, seq in enumerate(sequences)]
