"""tau2's reward for one episode, and pass^k over trials (sierra-research/tau2-bench, MIT).

`evaluate_episode(domain, task, episode, nl_judge)` follows tau2's evaluator:

* An episode that did not end with the user or the agent stopping (max steps, too many
  errors, an endpoint failure) scores 0 ("premature termination").
* DB: the predicted environment is rebuilt from the episode's tool calls (only mutating
  tools re-run, as tau2's `set_state`) and its hash compared with the gold replay's
  (`replay.evaluate_db`). A match against a gold replay whose mutating actions raised is
  "not evaluated" (None) and leaves the product unchanged, as upstream.
* COMMUNICATE: every `communicate_info` string must occur, case-insensitively, in one
  assistant text message with its commas removed (tau2's substring check).
* ACTION: every gold action must match some predicted tool call: same name and equal
  values for `compare_args` (default: the keys of the predicted call's arguments).
* ENV_ASSERTION: toolkit methods called on the agent's final environment must return
  each assertion's `assert_value` (`check_env_assertions`).
* NL_ASSERTION: an LLM judge decides each assertion on the user/assistant transcript;
  all must be met. Without a judge the component is None (not evaluated) and reported.
* reward = product of the components named in the task's `reward_basis` (None skipped).

pass^k (tau2's `pass_hat_k`): for each task with n trials of which c succeeded
(reward == 1 up to 1e-6), C(c, k) / C(n, k); the metric is the mean over tasks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Sequence

from orchestra.envs.domains.base import Action, Domain, EnvAssertion, Task, Toolkit
from orchestra.envs.domains.replay import evaluate_db, replay_tool_calls

STOP_TERMINATIONS = ("user_stop", "agent_stop")
SUCCESS_TOL = 1e-6

# nl_judge(assertions, transcript_messages) -> (met per assertion or None on judge error,
#                                              cost_usd, note)
NLJudge = Callable[[list[str], list[dict]], Awaitable[tuple[Optional[list[bool]], float, str]]]


def is_success(reward: Optional[float]) -> bool:
  """tau2's success test: reward within 1e-6 of 1."""
  return reward is not None and abs(reward - 1.0) <= SUCCESS_TOL


def action_matches(action: Action, name: str, arguments: Mapping[str, Any]) -> bool:
  """tau2's `Action.compare_with_tool_call` for one predicted call."""
  if action.name != name:
    return False
  keys = list(arguments.keys()) if action.compare_args is None else list(action.compare_args)
  if not keys:
    return True
  predicted = {k: v for k, v in arguments.items() if k in keys}
  gold = {k: v for k, v in action.arguments.items() if k in keys}
  return predicted == gold


def check_actions(gold: Sequence[Action], calls: Iterable[Mapping[str, Any]]) -> list[bool]:
  """For each gold action, whether any predicted call ({"name", "arguments"}) matches it."""
  calls = list(calls)
  return [any(action_matches(a, c["name"], c.get("arguments") or {}) for c in calls)
          for a in gold]


def check_communicate(info: Sequence[str], assistant_texts: Iterable[str]) -> list[bool]:
  """For each string, whether it occurs in an assistant message (lower-cased, commas removed)."""
  texts = [t.lower().replace(",", "") for t in assistant_texts if t]
  return [any(s.lower() in t for t in texts) for s in info]


def check_env_assertions(env: Toolkit, assertions: Sequence[EnvAssertion]) -> list[dict]:
  """tau2's `run_env_assertion` on the agent's final environment, for each assertion.

  The toolkit method `func_name(**arguments)` is called; the assertion is met when the
  result equals `assert_value`. A call that raises is not met (tau2 would abort the
  evaluation) and its error is recorded.
  """
  checks = []
  for a in assertions:
    if a.env_type != "assistant":
      raise ValueError(f"env assertion {a.func_name!r} targets env_type {a.env_type!r}; "
                       "this domain has no user tools")
    check = {"func_name": a.func_name, "arguments": a.arguments, "message": a.message}
    try:
      result = env.run_function(a.func_name, a.arguments)
      check.update(met=result == a.assert_value, result=result)
    except Exception as e:  # noqa: BLE001 - recorded as an unmet assertion
      check.update(met=False, error=f"{type(e).__name__}: {e}")
    checks.append(check)
  return checks


@dataclasses.dataclass
class RewardInfo:
  """The outcome of one episode.

  Attributes:
    reward: product over the task's reward basis (0 on premature termination).
    breakdown: {"DB"|"COMMUNICATE"|"ACTION"|"NL_ASSERTION": component reward or None}.
    details: per-check results (hashes, matched actions, communicate and NL checks).
    judge_cost_usd: what the NL judge cost (0 when cached or unused).
  """

  reward: float
  breakdown: dict
  details: dict
  judge_cost_usd: float = 0.0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _product(breakdown: Mapping[str, Optional[float]], basis: Sequence[str]) -> float:
  reward = 1.0
  for key in basis:
    value = breakdown.get(key)
    if value is not None:
      reward *= value
  return reward


async def _judge_nl_assertions(assertions: Sequence[str], messages: Sequence[Mapping[str, Any]],
                               nl_judge: Optional[NLJudge]):
  """(score, details or None, judge cost) of the NL_ASSERTION basis: 1.0 when there are no
  assertions; None (not evaluated) without a judge; 0.0 when the judge fails; else 1.0 iff
  the judge finds every assertion met in the user/assistant transcript."""
  if not assertions:
    return 1.0, None, 0.0
  if nl_judge is None:
    return None, {"evaluated": False, "note": "no judge configured"}, 0.0
  transcript = [{"role": m["role"], "content": m.get("content") or ""} for m in messages
                if m.get("role") in ("user", "assistant") and m.get("content")]
  met, cost, note = await nl_judge(list(assertions), transcript)
  if met is None:
    return 0.0, {"evaluated": False, "note": f"judge error: {note}"}, cost
  return (1.0 if all(met) else 0.0), {"evaluated": True, "note": note, "checks": [
      {"assertion": a, "met": m} for a, m in zip(assertions, met)]}, cost


async def evaluate_episode(domain: Domain, task: Task, *, termination: str,
                           tool_calls: Sequence[Mapping[str, Any]],
                           messages: Sequence[Mapping[str, Any]],
                           nl_judge: Optional[NLJudge] = None) -> RewardInfo:
  """tau2's reward for one episode.

  Args:
    domain, task: what was run.
    termination: why the episode ended ("user_stop", "agent_stop", "max_steps", ...).
    tool_calls: the agent's tool calls in order, {"name", "arguments"} (tools that are not
      domain tools, such as call_expert, are ignored by the DB check).
    messages: the conversation, OpenAI-style dicts with "role" and "content"
      ("assistant" = the agent, "user" = the simulated user; tool messages are ignored).
    nl_judge: async judge of natural-language assertions (see `NLJudge`), or None.
  """
  crit = task.evaluation_criteria
  if crit is None:
    return RewardInfo(1.0, {}, {"note": "no evaluation criteria"})
  basis = list(crit.reward_basis)
  if termination not in STOP_TERMINATIONS:
    return RewardInfo(0.0, {k: 0.0 for k in basis},
                      {"note": f"premature termination ({termination})"})
  breakdown: dict[str, Optional[float]] = {}
  details: dict[str, Any] = {}
  judge_cost = 0.0

  if "DB" in basis or "ENV_ASSERTION" in basis:
    predicted = replay_tool_calls(domain, task, tool_calls)
    db = evaluate_db(domain, task, predicted)
    details["db"] = dataclasses.asdict(db)
    if "DB" in basis:
      breakdown["DB"] = db.reward
    if "ENV_ASSERTION" in basis:
      checks = check_env_assertions(predicted, crit.env_assertions or [])
      details["env_assertions"] = checks
      breakdown["ENV_ASSERTION"] = 1.0 if all(c["met"] for c in checks) else 0.0

  assistant_texts = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
  if "COMMUNICATE" in basis:
    info = crit.communicate_info or []
    met = check_communicate(info, assistant_texts)
    details["communicate"] = [{"info": s, "met": m} for s, m in zip(info, met)]
    breakdown["COMMUNICATE"] = 1.0 if all(met) else 0.0

  if "ACTION" in basis:
    gold = crit.actions or []
    met = check_actions(gold, tool_calls)
    details["actions"] = [{"action_id": a.action_id, "name": a.name, "matched": m}
                          for a, m in zip(gold, met)]
    breakdown["ACTION"] = 1.0 if all(met) else 0.0

  if "NL_ASSERTION" in basis:
    breakdown["NL_ASSERTION"], nl_details, judge_cost = await _judge_nl_assertions(
        crit.nl_assertions or [], messages, nl_judge)
    if nl_details is not None:
      details["nl_assertions"] = nl_details

  return RewardInfo(_product(breakdown, basis), breakdown, details, judge_cost)


def pass_hat_k(rewards_by_task: Mapping[str, Sequence[Optional[float]]], k: int) -> float:
  """tau2's pass^k: mean over tasks of C(c, k) / C(n, k).

  n is the task's number of trials and c how many succeeded (`is_success`). Every task
  needs at least k trials.
  """
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  if not rewards_by_task:
    raise ValueError("pass^k needs at least one task")
  values = []
  for task_id, rewards in rewards_by_task.items():
    n = len(rewards)
    if n < k:
      raise ValueError(f"task {task_id!r} has {n} trials, fewer than k={k}")
    c = sum(is_success(r) for r in rewards)
    values.append(math.comb(c, k) / math.comb(n, k))
  return sum(values) / len(values)
