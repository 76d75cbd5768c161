"""`launch/eval.py --benchmark tau2`: gold replay, or agent-vs-user-simulator evaluation.

  # replay every task's gold actions on a fresh environment; one JSON line per task
  python launch/eval.py --benchmark tau2 --domain airline --data ../shared/data/tau2 \\
      --replay_gold --out gold.jsonl
  # the orchestrator (any OpenAI-compatible chat model) against the user simulator
  python launch/eval.py --benchmark tau2 --domain retail --data ../shared/data/tau2 \\
      --split test --agent_url http://127.0.0.1:8000/v1 --agent_model policy \\
      --user_url https://api.openai.com/v1 --user_model gpt-4.1 --user_api_key_env OPENAI_API_KEY \\
      --tau2_judge_url https://api.openai.com/v1 --tau2_judge_model gpt-4.1 \\
      --tau2_judge_api_key_env OPENAI_API_KEY --num_trials 4 --out runs/retail.jsonl

Replay lines: {"task_id", "initial_db_hash", "final_db_hash", "actions": [{"name",
"arguments", "output", "error"}]} in tasks.json order (`output` is the exact string the
agent would see, `error` whether the tool raised).

Evaluation writes one JSON line per (task, trial) to --out (the episode: messages, tool
calls, termination, usage, reward and its breakdown) and `<out>.summary.json`, and prints
the summary: success rate, average reward, pass^k for k = 1..num_trials, the agent's
average cost (USD, call_expert included) and latency (s), the user simulator's cost, the
judge's cost, and how episodes ended.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from pathlib import Path

from absl import app

from orchestra.eval.settings_flags import from_flags, setting


@dataclasses.dataclass(frozen=True)
class Tau2Settings:
  """The tau2 flags of `launch/eval.py`, each defined here once (flag name = field name).

  The benchmark-wide --data, --out and --dry_run are read from FLAGS directly.
  """
  domain: str | None = setting(
      None, "tau2: the domain to run: airline, retail, a declarative domain (its folder, or its "
      "name under --data/domains, e.g. from launch/synthesize.py) or a domain module's path")
  split: str | None = setting(None, "tau2: a split of split_tasks.json (train, test, base); "
                              "default: every task")
  task_ids: list[str] | None = setting(None, "tau2: only these task ids")
  num_tasks: int = setting(0, "tau2: only the first N selected tasks (0: all)")
  replay_gold: bool = setting(False, "tau2: replay the gold actions, write one JSON line per "
                              "task to --out")
  num_trials: int = setting(1, "tau2: episodes per task (pass^k for k <= this)")
  max_steps: int = setting(100, "tau2: messages per episode before it is cut")
  max_errors: int = setting(10, "tau2: failed tool calls per episode before it is cut")
  tau2_concurrency: int = setting(4, "tau2: episodes in flight at once")
  agent_url: str | None = setting(None, "tau2: agent (orchestrator) endpoint, .../v1")
  agent_model: str | None = setting(None, "tau2: agent model name")
  agent_api_key_env: str | None = setting(None, "tau2: env variable with the agent's API key")
  agent_price_in: float = setting(0.0, "tau2: agent USD per 1M prompt tokens")
  agent_price_out: float = setting(0.0, "tau2: agent USD per 1M completion tokens")
  agent_max_tokens: int | None = setting(None, "tau2: agent tokens per reply")
  agent_temperature: float = setting(0.0, "tau2: agent temperature")
  user_url: str | None = setting(None, "tau2: user simulator endpoint (default: the agent's)")
  user_model: str | None = setting(None, "tau2: user simulator model (default: the agent's)")
  user_api_key_env: str | None = setting(None, "tau2: env variable with the user model's key")
  user_price_in: float = setting(0.0, "tau2: user simulator USD per 1M prompt tokens")
  user_price_out: float = setting(0.0, "tau2: user simulator USD per 1M completion tokens")
  user_max_tokens: int | None = setting(None, "tau2: user simulator tokens per reply")
  user_temperature: float = setting(0.0, "tau2: user simulator temperature")
  tau2_judge_url: str | None = setting(None, "tau2: NL-assertion judge endpoint, .../v1 "
                                       "(default: --judge_base_url)")
  tau2_judge_model: str | None = setting(None, "tau2: NL-assertion judge model (default: "
                                         "--judge_model)")
  tau2_judge_api_key_env: str | None = setting(None, "tau2: env variable with the judge's key")
  tau2_judge_cache: str | None = setting(None, "tau2: folder caching judge replies")
  expert_url: str | None = setting(None, "tau2: endpoint of the optional call_expert tool")
  expert_model: str | None = setting(None, "tau2: call_expert model")
  expert_api_key_env: str | None = setting(None, "tau2: env variable with the expert's key")
  expert_price_in: float = setting(0.0, "tau2: call_expert USD per 1M prompt tokens")
  expert_price_out: float = setting(0.0, "tau2: call_expert USD per 1M completion tokens")


def select_tasks(domain, split: str | None, task_ids: list[str] | None, num_tasks: int):
  """Tasks in tasks.json order, restricted to a split and/or ids, then the first num_tasks."""
  tasks = list(domain.tasks)
  if split:
    if split not in domain.splits:
      raise app.UsageError(f"--split={split}: domain {domain.name!r} has splits "
                           f"{sorted(domain.splits)}")
    keep = set(domain.splits[split])
    tasks = [t for t in tasks if t.id in keep]
  if task_ids:
    known = {t.id for t in tasks}
    missing = [i for i in task_ids if i not in known]
    if missing:
      raise app.UsageError(f"--task_ids: unknown (or outside --split) task ids {missing[:5]}")
    wanted = set(task_ids)
    tasks = [t for t in tasks if t.id in wanted]
  if num_tasks and num_tasks > 0:
    tasks = tasks[:num_tasks]
  return tasks


def write_jsonl(path: str, rows: list[dict]) -> None:
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def summarize(domain_name: str, results: list[dict], num_trials: int) -> dict:
  """Success rate, pass^k, cost and latency over (task, trial) result rows."""
  from orchestra.envs.domains.evaluate import is_success, pass_hat_k
  by_task: dict[str, list] = collections.defaultdict(list)
  for r in results:
    by_task[r["task_id"]].append(r["reward"])
  n = max(len(results), 1)
  return {
      "domain": domain_name, "num_tasks": len(by_task), "num_trials": num_trials,
      "num_episodes": len(results),
      "success_rate": sum(is_success(r["reward"]) for r in results) / n,
      "avg_reward": sum(r["reward"] for r in results) / n,
      "pass_hat_k": ({str(k): pass_hat_k(by_task, k) for k in range(1, num_trials + 1)}
                     if by_task else {}),
      "avg_cost_usd": sum(r["cost_usd"] for r in results) / n,
      "avg_latency_s": sum(r["latency_s"] for r in results) / n,
      "avg_user_cost_usd": sum(r["user_cost_usd"] for r in results) / n,
      "judge_cost_usd": sum(r["judge_cost_usd"] for r in results),
      "avg_steps": sum(r["steps"] for r in results) / n,
      "terminations": dict(collections.Counter(r["termination"] for r in results)),
      "nl_not_evaluated": sum(1 for r in results
                              if "NL_ASSERTION" in r["breakdown"]
                              and r["breakdown"]["NL_ASSERTION"] is None),
  }


def _endpoint(kind: str, url: str | None, model: str | None, api_key_env: str | None,
              price_in: float = 0.0, price_out: float = 0.0):
  """The chat endpoint of the --<kind>_* flags; a bad setting is a UsageError naming its flag."""
  from orchestra.eval.endpoints import EndpointSpec, endpoint_from_spec, setting_names
  from orchestra.eval.judge import JudgeConfigError
  try:
    return endpoint_from_spec(EndpointSpec(url, model, api_key_env, price_in, price_out),
                              setting_names(f"--{kind}_"))
  except JudgeConfigError as e:
    raise app.UsageError(str(e)) from None


async def run_evaluation(domain, tasks, *, agent_factory, user_factory, extra_tools=(),
                         nl_judge=None, num_trials: int = 1, max_steps: int = 100,
                         max_errors: int = 10, concurrency: int = 4,
                         progress=None) -> list[dict]:
  """Runs num_trials episodes per task and evaluates each; rows in (task, trial) order.

  `agent_factory()` / `user_factory()` build a fresh agent / user per episode.
  """
  from orchestra.envs.domains.conversation import run_conversation
  from orchestra.envs.domains.evaluate import evaluate_episode

  sem = asyncio.Semaphore(max(1, concurrency))

  async def one(task, trial):
    async with sem:
      ep = await run_conversation(domain, task, agent_factory(), user_factory(),
                                  extra_tools=extra_tools, max_steps=max_steps,
                                  max_errors=max_errors, trial=trial)
      info = await evaluate_episode(domain, task, termination=ep.termination,
                                    tool_calls=ep.tool_calls, messages=ep.messages,
                                    nl_judge=nl_judge)
      row = ep.to_json()
      row.update(reward=info.reward, breakdown=info.breakdown, details=info.details,
                 judge_cost_usd=info.judge_cost_usd)
      if progress:
        progress(row)
      return row

  jobs = [one(task, trial) for task in tasks for trial in range(num_trials)]
  return list(await asyncio.gather(*jobs))


def _print_dry_run(domain, tasks) -> None:
  """One JSON line: the domain, its task counts, tools and initial DB hash."""
  print(json.dumps({"domain": domain.name, "tasks": len(tasks), "all_tasks": len(domain.tasks),
                    "splits": {k: len(v) for k, v in domain.splits.items()},
                    "tools": len(domain.tool_schemas()),
                    "initial_db_hash": domain.initial_db_hash()}))


def _replay_gold(domain, tasks, out: str | None) -> None:
  """Replays every task's gold actions; one JSON line per task to `out`."""
  from orchestra.envs.domains.replay import replay_gold
  if not out:
    raise app.UsageError("--replay_gold needs --out FILE (one JSON line per task)")
  rows = [replay_gold(domain, task) for task in tasks]
  write_jsonl(out, rows)
  errors = sum(a["error"] for r in rows for a in r["actions"])
  print(f"replayed {len(rows)} {domain.name} tasks ({errors} gold actions raised); wrote {out}")


def _judges(args: Tau2Settings, FLAGS, tasks):  # noqa: N803 - absl's FLAGS object
  """(Judge or None, its NL-assertion judge or None). The judge defaults to the QA section's
  --judge_* flags when those exist and are set; without one, NL assertions go unevaluated."""
  judge_url = args.tau2_judge_url or getattr(FLAGS, "judge_base_url", None)
  judge_model = args.tau2_judge_model or getattr(FLAGS, "judge_model", None)
  judge_key = args.tau2_judge_api_key_env or getattr(FLAGS, "judge_api_key_env", None)
  if judge_url or judge_model:
    from orchestra.eval.judge import Judge
    from orchestra.eval.tau2_judge import make_nl_judge
    judge = Judge(_endpoint("tau2_judge", judge_url, judge_model, judge_key, 0.0, 0.0),
                  args.tau2_judge_cache)
    return judge, make_nl_judge(judge)
  if any("NL_ASSERTION" in (t.evaluation_criteria.reward_basis if t.evaluation_criteria
                            else []) and t.evaluation_criteria.nl_assertions for t in tasks):
    print("warning: no --tau2_judge_url/--tau2_judge_model: NL assertions are not evaluated "
          "(counted in nl_not_evaluated; scores are not comparable with tau2-Bench)")
  return None, None


def _expert_tools(args: Tau2Settings) -> list:
  """[the call_expert LLMTool] when --expert_url/--expert_model are given, else []."""
  if not (args.expert_url or args.expert_model):
    return []
  from orchestra.tools.base import ToolConfigError
  from orchestra.tools.llm import LLMTool
  if not (args.expert_url and args.expert_model):
    raise app.UsageError("--expert_url and --expert_model go together (the call_expert tool)")
  try:
    return [LLMTool(
        "call_expert", args.expert_model, args.expert_url,
        api_key_env=args.expert_api_key_env, price_in_per_1m=args.expert_price_in,
        price_out_per_1m=args.expert_price_out,
        description="Ask a stronger expert language model for advice; returns its reply.")]
  except ToolConfigError as e:
    raise app.UsageError(str(e)) from None


def _print_progress(row: dict) -> None:
  print(f"task {row['task_id']} trial {row['trial']}: reward {row['reward']:.2f} "
        f"({row['termination']}, {row['steps']} steps)", flush=True)


def _evaluate(args: Tau2Settings, FLAGS, data: str, domain, tasks) -> list[dict]:  # noqa: N803
  """Every task x trial conversed between the agent and the user endpoints; the rows."""
  from orchestra.envs.domains.conversation import LLMAgent, LLMUser, load_user_guidelines
  num_trials = int(args.num_trials)
  if num_trials < 1:
    raise app.UsageError(f"--num_trials must be >= 1, got {num_trials}")
  if int(args.max_steps) < 2:
    raise app.UsageError(f"--max_steps must be >= 2, got {args.max_steps}")
  agent_ep = _endpoint("agent", args.agent_url, args.agent_model, args.agent_api_key_env,
                       args.agent_price_in, args.agent_price_out)
  user_ep = _endpoint("user", args.user_url or args.agent_url,
                      args.user_model or args.agent_model,
                      args.user_api_key_env if args.user_url else args.agent_api_key_env,
                      args.user_price_in, args.user_price_out)
  try:
    guidelines = load_user_guidelines(data)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  judge, nl_judge = _judges(args, FLAGS, tasks)
  extra_tools = _expert_tools(args)
  logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

  async def go():
    try:
      return await run_evaluation(
          domain, tasks,
          agent_factory=lambda: LLMAgent(agent_ep, max_tokens=args.agent_max_tokens,
                                         temperature=args.agent_temperature),
          user_factory=lambda: LLMUser(user_ep, guidelines, max_tokens=args.user_max_tokens,
                                       temperature=args.user_temperature),
          extra_tools=extra_tools, nl_judge=nl_judge, num_trials=num_trials,
          max_steps=int(args.max_steps), max_errors=int(args.max_errors),
          concurrency=int(args.tau2_concurrency), progress=_print_progress)
    finally:
      for ep in (agent_ep, user_ep):
        await ep.aclose()
      if judge is not None:
        await judge.aclose()

  return asyncio.run(go())


def main(FLAGS) -> None:  # noqa: N803 - absl's FLAGS object
  """Entry point called by launch/eval.py for --benchmark tau2."""
  from orchestra.envs.domains import DOMAINS, load_domain
  args = from_flags(Tau2Settings, FLAGS)
  data, out = FLAGS.data, FLAGS.out
  if not args.domain:
    raise app.UsageError(f"--domain is required for --benchmark tau2 ({'|'.join(DOMAINS)}, or "
                         "a declarative domain)")
  if not data:
    raise app.UsageError("--data is required: the tau2 data folder (e.g. ../shared/data/tau2)")
  try:
    domain = load_domain(args.domain, data)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f"--data={data}: {e}") from None
  tasks = select_tasks(domain, args.split, args.task_ids, args.num_tasks)
  if FLAGS.dry_run:
    _print_dry_run(domain, tasks)
    return
  if args.replay_gold:
    _replay_gold(domain, tasks, out)
    return
  rows = _evaluate(args, FLAGS, data, domain, tasks)
  summary = summarize(domain.name, rows, num_trials=int(args.num_trials))
  if out:
    write_jsonl(out, rows)
    with open(out + ".summary.json", "w") as fh:
      json.dump(summary, fh, indent=2)
  print(json.dumps(summary, indent=2))
