"""Hand-computed cases for the ToolOrchestra reward (DESIGN section 2)."""

import numpy as np
import pytest

from orchestra.rewards import format_filter, keep_group, outcome_rewards, preference_rewards

# Three episodes, two tools. Features M = [calls1, calls2, outcome, -cost, -latency]:
#   ep0: [1, 0, 1, -0.10, -5]   ep1: [3, 1, 1, -0.40, -5]   ep2: [2, 1, 0, -0.20, -5]
# Min-max per column:
#   calls1 [0, 1, 0.5]   calls2 [0, 1, 1]   outcome [1, 1, 0]   -cost [1, 0, 2/3]   latency const -> [0, 0, 0]
CALLS = [[1, 0], [3, 1], [2, 1]]
CORRECT = [1, 1, 0]
COST = [0.10, 0.40, 0.20]
LATENCY = [5.0, 5.0, 5.0]


def test_cost_preference_rewards_the_cheap_correct_episode():
  # P = outcome + cost: R0 = 1 + 1 = 2, R1 = 1 + 0 = 1, R2 wrong -> 0.
  r = preference_rewards(CALLS, CORRECT, COST, LATENCY, [0, 0, 1, 1, 0])
  np.testing.assert_allclose(r, [2.0, 1.0, 0.0])


def test_tool_preference_flips_the_winner():
  # P = calls1 + outcome: R0 = 0 + 1 = 1, R1 = 1 + 1 = 2.
  r = preference_rewards(CALLS, CORRECT, COST, LATENCY, [1, 0, 1, 0, 0])
  np.testing.assert_allclose(r, [1.0, 2.0, 0.0])


def test_mixed_preference_and_constant_latency_column():
  # P = [.5, .5, 1, .5, .5]: R0 = 0 + 0 + 1 + .5 + 0 = 1.5, R1 = .5 + .5 + 1 + 0 + 0 = 2.
  r = preference_rewards(CALLS, CORRECT, COST, LATENCY, [0.5, 0.5, 1, 0.5, 0.5])
  np.testing.assert_allclose(r, [1.5, 2.0, 0.0])


def test_wrong_episode_gets_zero_even_when_cheapest():
  # ep2 is now the cheapest and fastest, but wrong.
  r = preference_rewards(CALLS, CORRECT, [0.3, 0.4, 0.0], [2.0, 3.0, 1.0], [0, 0, 0, 1, 1])
  # -cost: [-.3, -.4, 0] -> [1/4, 0, 1]; -latency: [-2, -3, -1] -> [1/2, 0, 1].
  np.testing.assert_allclose(r, [0.75, 0.0, 0.0])


def test_wrong_episodes_count_in_the_normalisation():
  # Latency [5, 3, 1] s, P = latency only. With the wrong (fastest) ep2 in the group,
  # -latency [-5, -3, -1] -> [0, .5, 1]: R = [0, .5, 0]. Without it, [-5, -3] -> [0, 1].
  preference = [0, 0, 0, 0, 1]
  with_wrong = preference_rewards(CALLS, CORRECT, COST, [5.0, 3.0, 1.0], preference)
  np.testing.assert_allclose(with_wrong, [0.0, 0.5, 0.0])
  without = preference_rewards(CALLS[:2], CORRECT[:2], COST[:2], [5.0, 3.0], preference)
  np.testing.assert_allclose(without, [0.0, 1.0])


def test_group_of_one_has_no_nan():
  r = preference_rewards([[2, 0]], [1], [0.3], [4.0], [1, 1, 1, 1, 1])
  np.testing.assert_array_equal(r, [0.0])


def test_ragged_group_after_dropping_invalid_episodes():
  """Drop mode removes ep1 before normalisation; the group of two still scores without NaN."""
  from orchestra.rl import group_advantages
  keep, _ = format_filter([True, False, True], mode="drop")
  calls, correct = np.asarray(CALLS)[keep], np.asarray(CORRECT)[keep]
  # Remaining: ep0 [1, 0, 1, -.1, -5], ep2 [2, 1, 0, -.2, -5]; P = outcome + cost -> R0 = 1 + 1.
  r = preference_rewards(calls, correct, np.asarray(COST)[keep], np.asarray(LATENCY)[keep],
                         [0, 0, 1, 1, 0])
  np.testing.assert_allclose(r, [2.0, 0.0])
  # Two rewards [2, 0]: mean 1, sample std sqrt(2) -> +-1/sqrt(2).
  np.testing.assert_allclose(group_advantages(r), [1 / np.sqrt(2), -1 / np.sqrt(2)], rtol=1e-5)


def test_shape_errors_name_the_argument():
  with pytest.raises(ValueError, match="preference must have n_tools \\+ 3 = 5"):
    preference_rewards(CALLS, CORRECT, COST, LATENCY, [1, 1, 1])
  with pytest.raises(ValueError, match="cost_usd must be"):
    preference_rewards(CALLS, CORRECT, COST[:2], LATENCY, [0] * 5)


def test_outcome_reward():
  np.testing.assert_array_equal(outcome_rewards([True, False, 1]), [1.0, 0.0, 1.0])


def test_homogeneity_filter():
  assert not keep_group([1.0, 1.0, 1.0])          # std 0
  assert keep_group([2.0, 1.0, 0.0])              # std 1
  assert not keep_group([0.55, 0.5, 0.45])        # std 0.05 < 0.1
  assert not keep_group([1.0])                    # a group of one teaches nothing


def test_format_filter_modes():
  keep, zero = format_filter([True, False, True], mode="drop")
  assert keep.tolist() == [True, False, True] and not zero.any()
  keep, zero = format_filter([True, False, True], mode="zero")
  assert keep.all() and zero.tolist() == [False, True, False]
  with pytest.raises(ValueError, match="'drop' or 'zero'"):
    format_filter([True], mode="skip")


def test_group_rewards_by_hand():
  from orchestra.rewards import group_rewards
  # (tool, outcome, cost, latency) weights; four episodes, one lost, one malformed.
  preference = [0.0, 1.0, 1.0, 0.0]
  args = ([[1], [1], [1], [1]], [True, True, True, False], [1.0, 3.0, 9.0, 2.0],
          [1.0, 1.0, 1.0, 1.0], preference)
  flags = dict(format_ok_G=[True, True, False, True], lost_G=[False, False, False, True])
  rewards, keep, correct = group_rewards(*args, **flags, invalid_format="zero")
  assert keep.tolist() == [True, True, True, False]
  assert correct.tolist() == [True, True, False, False]
  # kept costs [1, 3, 9] -> -cost min-max [1, 0.75, 0]; outcome [1, 1, 0] -> [1, 1, 0]
  np.testing.assert_allclose(rewards, [2.0, 1.75, 0.0, 0.0])
  rewards, keep, _ = group_rewards(*args, **flags, invalid_format="drop")
  assert keep.tolist() == [True, True, False, False]
  # both kept are correct: the outcome column is constant -> 0; costs [1, 3] -> [1, 0]
  np.testing.assert_allclose(rewards, [1.0, 0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="invalid_format='skip'"):
    group_rewards(*args, **flags, invalid_format="skip")
