"""Verification by execution: a synthesised task is kept only if it provably works.

`verify_task(domain, task)` returns None for a task to keep, else the reason to drop it:

  unknown_tool            a gold action names no tool of the domain
  gold_action_failed      a gold action raised (its error is in the detail)
  write_changes_nothing   a "write" task whose gold actions leave the database as it was
  read_changes_db         a "read" task whose gold actions change the database
  nondeterministic        two replays of the gold actions end in different database hashes
  gold_fails_evaluator    the gold actions plus a closing message that states
                          communicate_info do not reach reward 1 under tau2's evaluator
  do_nothing_passes       an agent that calls no tool and says nothing useful reaches reward 1

`Deduplicator` drops tasks whose normalised scenario and gold actions repeat another's
("duplicate"). All checks run the domain's own tools on fresh copies of its database.
"""

from __future__ import annotations

import json
import re

from orchestra.envs.domains import Domain, Task
from orchestra.envs.domains.evaluate import evaluate_episode, is_success
from orchestra.envs.domains.replay import replay_gold
from orchestra.synth.drafts import SynthDrop, task_kind

DO_NOTHING_REPLY = "I am sorry, I cannot help with that."


async def _reward(domain: Domain, task: Task, tool_calls: list[dict], reply: str) -> float:
  messages = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": reply}]
  info = await evaluate_episode(domain, task, termination="agent_stop", tool_calls=tool_calls,
                                messages=messages)
  return info.reward


async def verify_task(domain: Domain, task: Task) -> SynthDrop | None:
  """None when `task` passes every check above, else the first failure as a SynthDrop."""
  unknown = [a.name for a in task.gold_actions if not domain.toolkit_cls.has_tool(a.name)]
  if unknown:
    return SynthDrop("unknown_tool", f"gold actions call {unknown}")
  first = replay_gold(domain, task)
  failed = [a for a in first["actions"] if a["error"]]
  if failed:
    return SynthDrop("gold_action_failed", f"{failed[0]['name']}: {failed[0]['output']}")
  changed = first["final_db_hash"] != first["initial_db_hash"]
  kind = task_kind(task.model_dump())
  if kind == "write" and not changed:
    return SynthDrop("write_changes_nothing", "the gold actions leave the database unchanged")
  if kind == "read" and changed:
    return SynthDrop("read_changes_db", "a read-only task's gold actions change the database")
  if replay_gold(domain, task)["final_db_hash"] != first["final_db_hash"]:
    return SynthDrop("nondeterministic", "two gold replays end in different database hashes")
  crit = task.evaluation_criteria
  closing = " ".join(["Done.", *(crit.communicate_info or [])])
  calls = [{"name": a.name, "arguments": a.arguments} for a in task.gold_actions]
  if not is_success(await _reward(domain, task, calls, closing)):
    return SynthDrop("gold_fails_evaluator", "the gold trajectory does not reach reward 1")
  if is_success(await _reward(domain, task, [], DO_NOTHING_REPLY)):
    return SynthDrop("do_nothing_passes", "an agent that does nothing reaches reward 1")
  return None


def _normalise(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class Deduplicator:
  """Remembers kept tasks by their normalised request and gold actions."""

  def __init__(self):
    self.seen: set[str] = set()

  def check(self, task: Task) -> SynthDrop | None:
    instructions = task.user_scenario.instructions
    request = (instructions if isinstance(instructions, str)
               else instructions.reason_for_call + " " + instructions.task_instructions)
    key = json.dumps([_normalise(request),
                      [(a.name, a.arguments) for a in task.gold_actions]], sort_keys=True)
    if key in self.seen:
      return SynthDrop("duplicate", "the same request and gold actions as a kept task")
    self.seen.add(key)
    return None
