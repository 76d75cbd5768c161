"""PPO targets in the training loop: GAE over policy tokens and batch whitening, by hand."""

import numpy as np
from ml_collections import ConfigDict

from orchestra.train.loop import ppo_targets


class FixedCritic:
  """Stands in for the value model's `Learner`: fixed values per token."""

  def __init__(self, values_BT):
    self.values_BT = np.asarray(values_BT, np.float32)

  def apply(self, tokens, attention_mask):
    return self.values_BT


def test_gae_targets_with_gamma_and_lambda_one_are_reward_minus_value():
  # Row 0 is correct (R = 1) with policy tokens at t = 1, 2; row 1 wrong (R = 0) at t = 1, 3
  # (t = 2 is a tool observation: skipped by GAE, its value must not matter).
  mask = np.array([[0, 1, 1, 0], [0, 1, 0, 1]], bool)
  values = [[9.0, 0.2, 0.4, 9.0], [9.0, 0.5, 9.0, 0.1]]
  batch = {"tokens": np.zeros((2, 4), np.int32), "attention_mask": np.ones((2, 4), bool),
           "loss_mask": mask}
  rl = ConfigDict(dict(gamma=1.0, gae_lambda=1.0))
  ppo_targets(FixedCritic(values), batch, np.array([1.0, 0.0], np.float32), rl)
  # A_t = R - V_t on policy tokens: 0.8, 0.6 | -0.5, -0.1; mean 0.2, std sqrt(1.1 / 4).
  raw = np.array([[0, 0.8, 0.6, 0], [0, -0.5, 0, -0.1]])
  expected = np.where(mask, (raw - 0.2) / (np.sqrt(1.1 / 4) + 1e-6), 0.0)
  np.testing.assert_allclose(batch["advantages"], expected, atol=1e-5)
  # Returns are A + V = R on policy tokens, 0 elsewhere.
  np.testing.assert_allclose(batch["returns"], [[0, 1, 1, 0], [0, 0, 0, 0]], atol=1e-6)
  np.testing.assert_allclose(batch["old_values"], values)


def test_gae_with_lambda_below_one_discounts_later_errors():
  mask = np.array([[1, 1]], bool)
  batch = {"tokens": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), bool),
           "loss_mask": mask}
  ppo_targets(FixedCritic([[0.5, 0.25]]), batch, np.array([1.0], np.float32),
              ConfigDict(dict(gamma=1.0, gae_lambda=0.5)))
  # delta_1 = 1 - 0.25 = 0.75, A_1 = 0.75; delta_0 = 0.25 - 0.5 = -0.25, A_0 = -0.25 + 0.5 * 0.75.
  # Returns A + V: 0.625, 1.0. Whitened over the two tokens: -1, +1.
  np.testing.assert_allclose(batch["returns"], [[0.625, 1.0]], atol=1e-6)
  np.testing.assert_allclose(batch["advantages"], [[-1.0, 1.0]], atol=1e-4)
