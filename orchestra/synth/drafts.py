"""What generators hand the pipeline: task drafts, `SynthDrop` for what must be dropped,
and `Spend` for what their LLM calls cost.

A task draft is the generator-neutral form of one task (the LLM is asked for exactly this):

  {"kind": "write",                       # "write" changes the database, "read" does not
   "persona": "A busy nurse.",            # optional
   "reason_for_call": "...", "known_info": "...", "unknown_info": "...",
   "task_instructions": "...",            # what the simulated user knows, wants and does
   "actions": [{"name": "find_patient_by_email", "arguments": {"email": "..."}}, ...],
   "communicate_info": ["app_014"]}       # strings the agent must say to the user

`task_from_draft` turns it into a tau2 task (tasks.json), graded on the DB hash and on
`communicate_info` (tau2's COMMUNICATE check).
"""

from __future__ import annotations

import dataclasses
from typing import Any

TASK_KINDS = ("read", "write")
DRAFT_SCHEMA = {
    "type": "object",
    "required": ["kind", "reason_for_call", "known_info", "task_instructions", "actions",
                 "communicate_info"],
    "properties": {
        "kind": {"enum": list(TASK_KINDS)},
        "persona": {"type": ["string", "null"]},
        "reason_for_call": {"type": "string", "minLength": 1},
        "known_info": {"type": "string"},
        "unknown_info": {"type": ["string", "null"]},
        "task_instructions": {"type": "string", "minLength": 1},
        "actions": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "arguments"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}}},
        "communicate_info": {"type": "array", "items": {"type": "string"}},
        "template": {"type": "string"},
    },
}


@dataclasses.dataclass
class Spend:
  """What a generator's LLM calls cost (zero for the procedural generator)."""

  cost_usd: float = 0.0
  requests: int = 0
  prompt_tokens: int = 0
  completion_tokens: int = 0

  def add(self, other: "Spend") -> None:
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class SynthDrop(Exception):
  """Something a generator made that cannot be kept: `reason` (a short key) and `detail`."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason, self.detail = reason, detail


def task_from_draft(domain: str, task_id: str, draft: dict[str, Any]) -> dict:
  """The tau2 task (a tasks.json row) of a checked draft; reward on DB (+ COMMUNICATE)."""
  info = [str(s) for s in draft.get("communicate_info") or []]
  return {
      "id": task_id,
      "description": {"purpose": draft.get("template", "synthesised"), "kind": draft["kind"]},
      "user_scenario": {"persona": draft.get("persona"), "instructions": {
          "domain": domain, "reason_for_call": draft["reason_for_call"],
          "known_info": draft.get("known_info") or None,
          "unknown_info": draft.get("unknown_info") or None,
          "task_instructions": draft["task_instructions"]}},
      "evaluation_criteria": {
          "actions": [{"action_id": f"{task_id}_{i}", "name": a["name"],
                       "arguments": a["arguments"]} for i, a in enumerate(draft["actions"])],
          "communicate_info": info,
          "reward_basis": ["DB", "COMMUNICATE"] if info else ["DB"]},
  }


def task_kind(task: dict) -> str:
  """"read" or "write": what a synthesised task (tasks.json row) says it does."""
  return (task.get("description") or {}).get("kind", "write")
