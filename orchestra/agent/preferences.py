"""Preference vectors shown to the orchestrator in its instruction.

A preference vector P has one weight per tool (how much the user wants that
tool used), then outcome, cost and latency -- the order of the reward's
feature vector (`orchestra.rewards.preference_rewards`). The instruction
states the weights so the policy can condition on them.
"""

from __future__ import annotations

from collections.abc import Sequence


def priority(cost: float, latency: float) -> str:
  """The weights' gist in words, besides accuracy: what a small policy keys on most easily.

  "accuracy only" when neither cost nor latency counts, else the heavier of the two, or
  both when they weigh the same.
  """
  if cost <= 0 and latency <= 0:
    return "accuracy only"
  if cost == latency:
    return "low cost and low latency"
  return "low cost" if cost > latency else "low latency"


def preference_instruction(preference: Sequence[float], tool_names: Sequence[str]) -> str:
  """One paragraph stating P = (tools..., outcome, cost, latency) in numbers, then its gist."""
  preference = [float(p) for p in preference]
  if len(preference) != len(tool_names) + 3:
    raise ValueError(f"preference has {len(preference)} entries; expected "
                     f"{len(tool_names) + 3} (one per tool, then outcome, cost, latency)")
  *tools, outcome, cost, latency = preference
  lines = [f"User preferences (weights; higher = matters more): accuracy {outcome:g}, "
           f"low cost {cost:g}, low latency {latency:g}. Priority: {priority(cost, latency)}."]
  used = [f"{name} {w:g}" for name, w in zip(tool_names, tools, strict=True) if w]
  if used:
    lines.append("Preferred tools: " + ", ".join(used) + ".")
  return " ".join(lines)
