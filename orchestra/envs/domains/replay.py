"""Gold-trajectory replay and the DB criterion, as tau2's `EnvironmentEvaluator` does them.

* `replay_gold` runs EVERY gold action of a task, in order, on a fresh environment that
  has the task's initial state (tau2's `replay_golden_actions`): read-only actions run
  too, assistant actions on the domain toolkit and user actions on the user toolkit --
  airline and retail have none, so a user action fails with tau2's "User tools not
  available" (no shipped task has one). Failures never stop the replay.
* `replay_tool_calls` rebuilds the predicted environment from an agent trajectory the
  way tau2's `Environment.set_state` does: unknown tool names are skipped (no-ops) and
  only state-mutating tools are re-executed.
* `evaluate_db` compares gold and predicted DB hashes. As upstream, a gold replay whose
  state-mutating actions raised cannot certify a match: a match is then reported as
  not evaluated (reward None) while a mismatch still scores 0.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from orchestra.envs.domains.base import Action, Domain, Task, Toolkit, ToolOutput

USER_TOOLS_UNAVAILABLE = ToolOutput("Error: User tools not available", True)


def run_action(env: Toolkit, action: Action, user_env: Optional[Toolkit] = None) -> ToolOutput:
  """Runs one gold action on the toolkit its requestor addresses."""
  if action.requestor == "user":
    if user_env is None:
      return USER_TOOLS_UNAVAILABLE
    return user_env.execute(action.name, action.arguments)
  return env.execute(action.name, action.arguments)


def _gold_run(domain: Domain, task: Task) -> tuple[Toolkit, str, list[dict], list[dict]]:
  """Fresh env + initial state, all gold actions run: (env, initial hash, records, failures)."""
  env = domain.new_env(task)
  initial = env.db_hash() if task.initial_state is not None else domain.initial_db_hash()
  records, failed = [], []
  for action in task.gold_actions:
    out = run_action(env, action)
    records.append({"name": action.name, "arguments": action.arguments,
                    "output": out.text, "error": out.error})
    if out.error and env.mutates_state(action.name):
      failed.append({"action_id": action.action_id, "tool_name": action.name,
                     "requestor": action.requestor, "error": out.text})
  return env, initial, records, failed


def replay_gold(domain: Domain, task: Task) -> dict:
  """{"task_id", "initial_db_hash", "final_db_hash", "actions": [{name, arguments, output, error}]}."""
  env, initial, records, _ = _gold_run(domain, task)
  return {"task_id": task.id, "initial_db_hash": initial, "final_db_hash": env.db_hash(),
          "actions": records}


def replay_all(domain: Domain, out_path: Path | str) -> list[dict]:
  """Replays every task (tasks.json order) and writes one JSON line per task to `out_path`."""
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  records = [replay_gold(domain, task) for task in domain.tasks]
  with out_path.open("w") as f:
    for rec in records:
      f.write(json.dumps(rec) + "\n")
  return records


def gold_db_hash(domain: Domain, task: Task) -> tuple[str, list[dict]]:
  """(gold final DB hash, failed state-mutating gold actions), cached on the domain."""
  key = ("gold_db_hash", task.model_dump_json())
  if key not in domain.cache:
    env, _, _, failed = _gold_run(domain, task)
    domain.cache[key] = (env.db_hash(), failed)
  gold_hash, failed = domain.cache[key]
  return gold_hash, [dict(f) for f in failed]


def replay_tool_calls(domain: Domain, task: Task,
                      tool_calls: Iterable[Mapping[str, Any]]) -> Toolkit:
  """Predicted env from a trajectory's tool calls ({"name", "arguments"[, "requestor"]}).

  Mirrors tau2's `set_state`: fresh env with the task's initial state, unknown tools and
  non-mutating tools skipped, user-requestor calls rejected (no user tools here).
  """
  env = domain.new_env(task)
  for call in tool_calls:
    name = call.get("name")
    if call.get("requestor", "assistant") != "assistant":
      raise ValueError(f"tool call {name!r} has requestor {call.get('requestor')!r}; "
                       f"domain {domain.name!r} has no user tools")
    if not env.has_tool(name) or not env.mutates_state(name):
      continue
    env.execute(name, call.get("arguments") or {})
  return env


@dataclasses.dataclass(frozen=True)
class DBCheck:
  """Outcome of the DB criterion.

  Attributes:
    match: gold hash == predicted hash (None when the task has no evaluation criteria).
    reward: 1.0 / 0.0, or None when not evaluated (no criteria, or a match against an
      incomplete gold state).
    gold_hash, predicted_hash: the two hashes compared (None when not computed).
    failed_gold_actions: state-mutating gold actions that raised during the gold replay.
  """

  match: Optional[bool]
  reward: Optional[float]
  gold_hash: Optional[str]
  predicted_hash: Optional[str]
  failed_gold_actions: list = dataclasses.field(default_factory=list)


def evaluate_db(domain: Domain, task: Task, predicted_env: Toolkit) -> DBCheck:
  """The DB part of tau2's `EnvironmentEvaluator` for an env the agent acted on.

  `predicted_env` must have started from `domain.new_env(task)` (so it carries the
  task's initial state, like the gold env) -- or be rebuilt with `replay_tool_calls`.
  """
  crit = task.evaluation_criteria
  if crit is None:
    return DBCheck(None, None, None, None)
  predicted = predicted_env.db_hash()
  if crit.actions is None and crit.env_assertions is None:
    return DBCheck(True, 1.0, None, predicted)
  gold, failed = gold_db_hash(domain, task)
  match = gold == predicted
  reward = 1.0 if match else 0.0
  if failed and match:
    reward = None
  return DBCheck(match, reward, gold, predicted, failed)
