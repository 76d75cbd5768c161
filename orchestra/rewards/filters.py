"""Group and episode filters applied before advantages are used for training."""

from __future__ import annotations

import numpy as np


def group_reward_std(rewards) -> float:
  """Sample standard deviation (ddof=1) of a group's rewards; 0 for a group of one."""
  rewards = np.asarray(rewards, np.float64)
  return float(rewards.std(ddof=1)) if rewards.size > 1 else 0.0


def keep_group(rewards, std_threshold: float = 0.1) -> bool:
  """Homogeneity filter: a group whose reward std is below the threshold teaches nothing."""
  return group_reward_std(rewards) >= std_threshold


def format_filter(valid, mode: str = "drop") -> tuple[np.ndarray, np.ndarray]:
  """Handles episodes with an invalid tool-call format or no answer.

  Returns (keep [G] bool, zero_reward [G] bool). `mode="drop"` removes
  invalid episodes from the group (before normalisation); `mode="zero"` keeps
  them in the group, where they count for min-max normalisation, with reward 0.
  """
  valid = np.asarray(valid, bool)
  if mode == "drop":
    return valid, np.zeros_like(valid)
  if mode == "zero":
    return np.ones_like(valid), ~valid
  raise ValueError(f"invalid_format={mode!r}: expected 'drop' or 'zero'")
