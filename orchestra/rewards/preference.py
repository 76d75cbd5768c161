"""The ToolOrchestra multi-objective reward for one group of episodes.

A group holds the episodes of one task under one preference vector P. For
episode i the feature vector is

    M_i = [calls_i(tool_1), ..., calls_i(tool_n), outcome_i, -cost_usd_i, -latency_s_i]

Each column k is min-max normalised over the group (wrong episodes included):

    N_ik = (M_ik - min_j M_jk) / (max_j M_jk - min_j M_jk),   N_ik = 0 where max == min,

and the reward is  R_i = P . N_i  if episode i is correct, else 0.

These run on the host (numpy): groups are small and ragged (episodes may be
dropped), and no parameter is involved.
"""

from __future__ import annotations

import numpy as np


def minmax_normalise(features_GK: np.ndarray) -> np.ndarray:
  """Column-wise (M - min) / (max - min) over the group; constant columns -> 0."""
  features_GK = np.asarray(features_GK, np.float64)
  lo = features_GK.min(axis=0, keepdims=True)
  span = features_GK.max(axis=0, keepdims=True) - lo
  safe = np.where(span > 0, span, 1.0)
  return np.where(span > 0, (features_GK - lo) / safe, 0.0)


def feature_matrix(tool_calls, correct, cost_usd, latency_s) -> np.ndarray:
  """M [G, n_tools + 3] = [calls..., outcome, -cost, -latency]."""
  tool_calls = np.asarray(tool_calls, np.float64)
  if tool_calls.ndim != 2:
    raise ValueError(f"tool_calls must be [group, n_tools], got shape {tool_calls.shape}")
  columns = [np.asarray(x, np.float64) for x in (correct, cost_usd, latency_s)]
  for name, col in zip(("correct", "cost_usd", "latency_s"), columns):
    if col.shape != (tool_calls.shape[0],):
      raise ValueError(f"{name} must be [group={tool_calls.shape[0]}], got shape {col.shape}")
  outcome, cost, latency = columns
  return np.concatenate([tool_calls, np.stack([outcome, -cost, -latency], axis=1)], axis=1)


def preference_rewards(tool_calls, correct, cost_usd, latency_s, preference) -> np.ndarray:
  """Rewards [G] of DESIGN section 2, before advantage normalisation.

  Args:
    tool_calls: [G, n_tools] call counts per tool.
    correct: [G] outcome (1 correct, 0 wrong; bool or float).
    cost_usd: [G] dollars spent by the episode.
    latency_s: [G] seconds spent by the episode.
    preference: [n_tools + 3] weights ordered (tools..., outcome, cost, latency).

  Returns:
    R [G] = P . minmax(M) for correct episodes, 0 for wrong ones (float64).
  """
  features = feature_matrix(tool_calls, correct, cost_usd, latency_s)
  preference = np.asarray(preference, np.float64)
  if preference.shape != (features.shape[1],):
    raise ValueError(f"preference must have n_tools + 3 = {features.shape[1]} entries "
                     f"(tools..., outcome, cost, latency), got shape {preference.shape}")
  rewards = minmax_normalise(features) @ preference
  return np.where(np.asarray(correct, bool), rewards, 0.0)


def outcome_rewards(correct) -> np.ndarray:
  """The plain outcome-only reward: 1 if correct, else 0."""
  return np.asarray(correct, bool).astype(np.float64)
