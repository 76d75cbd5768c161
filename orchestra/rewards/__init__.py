"""Rewards: the ToolOrchestra preference reward, outcome reward, and filters."""

from orchestra.rewards.filters import format_filter, group_reward_std, keep_group
from orchestra.rewards.group import group_rewards
from orchestra.rewards.preference import (feature_matrix, minmax_normalise, outcome_rewards,
                                          preference_rewards)

__all__ = ["feature_matrix", "format_filter", "group_reward_std", "group_rewards", "keep_group",
           "minmax_normalise", "outcome_rewards", "preference_rewards"]
