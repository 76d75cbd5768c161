"""Which episodes of a group count, and their rewards (DESIGN section 2), as arrays.

For a group of G episodes of one task under one preference vector P:

    keep_i    = not lost_i  and  (format_ok_i  or  invalid_format == "zero")
    correct_i = correct_i  and  format_ok_i  and  keep_i
    R_i       = P . minmax_over_kept(M)_i  if correct_i, else 0        (0 where not kept)

`lost` marks episodes lost to our infrastructure (an engine or user-simulator failure):
they say nothing about the policy and always leave the group. Episodes that ran out of
turns or tokens are kept, as wrong: that is the policy's doing. With "drop", an episode
with a malformed tool call leaves the group; with "zero" it stays (it counts for the
min-max) with reward 0.
"""

from __future__ import annotations

import numpy as np

from orchestra.rewards.filters import format_filter
from orchestra.rewards.preference import preference_rewards


def group_rewards(tool_calls_GN, correct_G, cost_usd_G, latency_s_G, preference, *,
                  format_ok_G, lost_G, invalid_format: str = "zero"):
  """(rewards [G], keep [G] bool, correct [G] bool) per the rules above."""
  format_ok = np.asarray(format_ok_G, bool)
  kept_by_format, _ = format_filter(format_ok, invalid_format)
  keep = kept_by_format & ~np.asarray(lost_G, bool)
  correct = np.asarray(correct_G, bool) & format_ok & keep
  rewards = np.zeros(len(keep))
  if keep.any():
    rewards[keep] = preference_rewards(np.asarray(tool_calls_GN, np.float64)[keep], correct[keep],
                                       np.asarray(cost_usd_G)[keep],
                                       np.asarray(latency_s_G)[keep], preference)
  return rewards, keep, correct
