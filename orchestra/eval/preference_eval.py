"""Evaluate policies under preference vectors on a held-out split: table, JSON and Pareto plot.

Policies: `rl` (the run's newest checkpoint), `sft` (the SFT-only checkpoint),
and, on toolscale-mini, scripted baselines that go through the same episode loop
and tools: `random` (one random tool, then answer), `cheapest` (ask the cheapest
expert, answer with its reply), `strongest` (the same with the most expensive
expert). On a tau2 domain (`config.env.name = "tau2_domain"`) the policies are
`rl` and `sft`, each episode a conversation graded by tau2's evaluator, and
`accuracy` is the success rate.

`mean_reward` is the ToolOrchestra reward with the group taken across
policies: for each task, the features of every policy's episode are min-max
normalised together, so the rewards of different policies are comparable.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re

import numpy as np

from orchestra.agent.chat_format import TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN
from orchestra.agent.episode import scripted_completion
from orchestra.engines import JaxEngine, SamplingParams
from orchestra.rewards import preference_rewards
from orchestra.checkpoint import SFT_DIR

_NUMBER = re.compile(r"-?\d+")


class ScriptedAgent:
  """A baseline as an engine: turn 1 calls `first_call`, turn 2 answers from the observation."""

  weight_version = -1

  def __init__(self, tokenizer, first_call):
    self.tokenizer, self.first_call, self.turn = tokenizer, first_call, 0

  async def generate(self, prompt_ids, sampling):
    if self.turn == 0:
      name, args = self.first_call
    else:
      text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
      observation = text.rsplit(TOOL_RESPONSE_OPEN, 1)[-1].split(TOOL_RESPONSE_CLOSE)[0]
      numbers = _NUMBER.findall(observation)
      name, args = "answer", {"answer": numbers[-1] if numbers else observation.strip()[:40]}
    self.turn += 1
    return scripted_completion(self.tokenizer, name, args, self.weight_version)


def _expert_by_price(setup, cheapest: bool) -> str:
  experts = [n for n in setup.tool_names if n in setup.experts]
  price = lambda n: setup.experts[n].price_in_per_1m + setup.experts[n].price_out_per_1m
  return (min if cheapest else max)(experts, key=price)


def _baseline_call(setup, policy: str, task, rng: random.Random):
  if policy in ("cheapest", "strongest"):
    return _expert_by_price(setup, policy == "cheapest"), {"prompt": task.question}
  name = rng.choice(setup.tool_names)
  if name in setup.experts:
    return name, {"prompt": task.question}
  plan = dict(setup.env.teacher_calls(task, (name,), rng))
  if name in plan:
    return name, plan[name]
  return name, ({"query": task.question} if name == "local_search" else {"code": "print(0)"})


class PolicyChoiceError(ValueError):
  """Policies asked for that this setup cannot run (scripted baselines off toolscale-mini)."""


def evaluate(setup, workdir: str, policies=None, preferences=None) -> list[dict]:
  """Rows of per-(policy, preference) metrics on `config.eval.split`.

  `setup` is a run setup (`orchestra.train.setup.build_setup`); the scripted baselines
  need toolscale-mini's (its `experts` and `env.teacher_calls`).
  """
  from orchestra.checkpoint.export import restore_policy
  cfg = setup.config.eval
  policies = list(policies or cfg.policies)
  preferences = list(preferences or cfg.preferences)
  baselines = [p for p in policies if p not in ("rl", "sft")]
  if baselines and not hasattr(setup, "experts"):
    raise PolicyChoiceError(f"policies {baselines} are toolscale-mini baselines; on a tau2 "
                           "domain evaluate rl and sft (--policies=rl,sft)")
  tasks = setup.tasks(cfg.split)[:cfg.num_tasks]
  engines = {}
  for policy in policies:
    if policy in ("rl", "sft"):
      source = workdir if policy == "rl" else os.path.join(workdir, SFT_DIR)
      model, step = restore_policy(source)
      print(f"{policy}: checkpoint step {step} of {source}")
      engines[policy] = JaxEngine(model)
  sampling = SamplingParams(max_tokens=setup.config.episode.turn_tokens,
                            temperature=cfg.temperature, seed=0,
                            stop_token_ids=setup.model_config.stop_token_ids)

  episodes = asyncio.run(_run_episodes(setup, engines, tasks, policies, preferences, sampling))
  return _metric_rows(setup, episodes, len(tasks), policies, preferences)


async def _run_episodes(setup, engines: dict, tasks, policies, preferences,
                        sampling: SamplingParams) -> dict:
  """{(policy, preference, task index): episode}, at most 64 episodes at a time; a policy
  without an engine is a scripted baseline."""
  sem = asyncio.Semaphore(64)

  async def episode(policy, preference, index):
    async with sem:
      if policy in engines:
        engine = engines[policy]
      else:
        engine = ScriptedAgent(setup.tokenizer, _baseline_call(setup, policy, tasks[index],
                                                               random.Random(index)))
      return await setup.rollout(engine, tasks[index], preference, sampling)

  keys = [(p, pref, i) for pref in preferences for p in policies for i in range(len(tasks))]
  results = await asyncio.gather(*(episode(*key) for key in keys))
  return dict(zip(keys, results, strict=True))


def _metric_rows(setup, episodes: dict, num_tasks: int, policies, preferences) -> list[dict]:
  """One row per (policy, preference). The reward of a task's episode is computed with the
  other policies' episodes on that task as its group (`preference_rewards`)."""
  rows = []
  for pref in preferences:
    vector = setup.preference(pref)
    rewards = {p: [] for p in policies}
    for i in range(num_tasks):                # the group: every policy's episode on this task
      trajs = [episodes[(p, pref, i)].trajectory for p in policies]
      correct = [t.format_ok and episodes[(p, pref, i)].correct
                 for p, t in zip(policies, trajs, strict=True)]
      calls = [[t.tool_calls.get(n, 0) for n in setup.tool_names] for t in trajs]
      r = preference_rewards(calls, correct, [t.cost_usd for t in trajs],
                             [t.latency_s for t in trajs], vector)
      for p, value in zip(policies, r, strict=True):
        rewards[p].append(float(value))
    for p in policies:
      trajs = [episodes[(p, pref, i)].trajectory for i in range(num_tasks)]
      correct = [episodes[(p, pref, i)].correct for i in range(num_tasks)]
      rows.append({
          "policy": p, "preference": pref, "n": len(trajs),
          "accuracy": float(np.mean(correct)),
          "mean_cost_usd": float(np.mean([t.cost_usd for t in trajs])),
          "mean_latency_s": float(np.mean([t.latency_s for t in trajs])),
          "mean_reward": float(np.mean(rewards[p])),
          "format_ok": float(np.mean([t.format_ok for t in trajs])),
          "tool_calls": {n: float(np.mean([t.tool_calls.get(n, 0) for t in trajs]))
                         for n in setup.tool_names},
      })
  return rows


def write_report(rows: list[dict], out_dir: str) -> dict[str, str]:
  """report.json, report.md and pareto.png (accuracy vs mean cost) in `out_dir`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in
           (("json", "report.json"), ("md", "report.md"), ("png", "pareto.png"))}
  with open(paths["json"], "w") as f:
    json.dump(rows, f, indent=2)
  tools = list(rows[0]["tool_calls"]) if rows else []
  header = ["policy", "preference", "accuracy", "mean cost ($)", "mean latency (s)",
            "mean reward", *(f"calls {t}" for t in tools), "n"]
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  for r in rows:
    cells = [r["policy"], r["preference"], f"{r['accuracy']:.3f}", f"{r['mean_cost_usd']:.6f}",
             f"{r['mean_latency_s']:.2f}", f"{r['mean_reward']:.3f}",
             *(f"{r['tool_calls'][t]:.2f}" for t in tools), str(r["n"])]
    lines.append("| " + " | ".join(cells) + " |")
  with open(paths["md"], "w") as f:
    f.write("\n".join(lines) + "\n")
  preferences = list(dict.fromkeys(r["preference"] for r in rows))
  colours = dict(zip(dict.fromkeys(r["policy"] for r in rows), plt.cm.tab10.colors))
  fig, axes = plt.subplots(1, len(preferences), figsize=(4.2 * len(preferences), 4), sharey=True,
                           squeeze=False)
  for ax, pref in zip(axes[0], preferences, strict=True):
    for r in (r for r in rows if r["preference"] == pref):
      ax.scatter(r["mean_cost_usd"], r["accuracy"], s=80, color=colours[r["policy"]],
                 label=r["policy"], edgecolors="black", linewidths=0.5)
      ax.annotate(r["policy"], (r["mean_cost_usd"], r["accuracy"]), textcoords="offset points",
                  xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_title(f"preference: {pref}")
    ax.set_xlabel("mean cost per task (USD, log)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("accuracy")
  axes[0][0].set_ylim(-0.05, 1.05)
  axes[0][-1].legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(paths["png"], dpi=120)
  plt.close(fig)
  return paths
