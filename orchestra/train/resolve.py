"""The resolved run: every config field the training and evaluation code read, as they use it.

`resolved_run(config)` reads each field of the schema the run uses (model, episode,
SFT, RL with its loss, environment, tools, preferences, checkpoints, evaluation) and
returns the settings as the code will use them: `launch/train.py --dry_run` prints it
as JSON on its last line. Reading goes through `ReadTracker`, so
`unread_fields(config)` lists every field of a config that no code reads: a typo in a
config file or a dead field, which `launch/train.py` refuses before it starts.

When code starts reading a new field, read it here too (the run refuses the field
otherwise, which is how this file stays complete).
"""

from __future__ import annotations

import dataclasses
import difflib

from ml_collections import ConfigDict

from orchestra.train.run_record import flatten
from orchestra.train.setup_base import episode_config, policy_loss_config

TOOLSCALE_SFT = ("expert_demo_fraction", "preferred_expert_fraction")


class ReadTracker:
  """A read-only view of a ConfigDict that records the dotted path of every field read."""

  def __init__(self, config: ConfigDict, seen: set[str] | None = None, prefix: str = ""):
    self._config, self._prefix = config, prefix
    self.seen = set() if seen is None else seen

  def _wrap(self, key: str, value):
    path = self._prefix + key
    self.seen.add(path)
    if isinstance(value, ConfigDict):
      return ReadTracker(value, self.seen, path + ".")
    return value

  def __getattr__(self, key: str):
    if key.startswith("_"):
      raise AttributeError(key)
    return self._wrap(key, self._config[key])

  def __getitem__(self, key: str):
    return self._wrap(key, self._config[key])

  def __contains__(self, key: str) -> bool:
    return key in self._config

  def get(self, key: str, default=None):
    return self._wrap(key, self._config[key]) if key in self._config else default

  def keys(self):
    return list(self._config.keys())

  def items(self):
    return [(k, self._wrap(k, self._config[k])) for k in self._config.keys()]

  def to_dict(self) -> dict:
    """Every field below, read (as a plain dict)."""
    return {k: v.to_dict() if isinstance(v, ReadTracker) else v for k, v in self.items()}


def resolved_run(config, model_config=None) -> dict:
  """The run's settings as the code uses them (JSON-able); reads every field it uses.

  `model_config` (the `DecoderConfig` over the run's tokenizer), when given, adds the
  model's exact shape and parameter count.
  """
  c = config
  env = _env(c)
  run = {
      "backend": c.get("backend", "jax"),          # launch/train.py: "vllm" = paper dry run
      "seed": c.seed,
      "env": env,
      "tools": _tools(c, env["name"]),
      "model": c.model.to_dict(),
      "episode": dataclasses.asdict(episode_config(c)),
      "turn_tokens": c.episode.turn_tokens,
      "sampling_temperature": c.episode.temperature,
      "sft": _sft(c, env["name"]),
      "rl": _rl(c),
      "preferences": {name: list(v) for name, v in c.preferences.items()},
      "train_preferences": list(c.train_preferences),
      "checkpoint": c.checkpoint.to_dict(),
      "eval": c.eval.to_dict(),
  }
  if model_config is not None:
    run["model"] = {**run["model"], "num_params": model_config.num_params,
                    "vocab_size": model_config.vocab_size}
  return run


def _env(c) -> dict:
  name = c.env.get("name", "toolscale_mini")
  if name == "tau2_domain":
    return c.env.to_dict()          # domain, data, user simulator, judge, limits
  return {"name": name, "seed": c.env.seed, "n_entities": c.env.n_entities,
          "n_tasks": c.env.n_tasks}


def _tools(c, env_name: str) -> dict:
  tools = {"names": list(c.tools.names)}
  if env_name == "tau2_domain":
    tools["llm"] = c.tools.llm.to_dict()
  else:
    tools.update(code_timeout_s=c.tools.code_timeout_s, search_top_k=c.tools.search_top_k,
                 descriptions=c.tools.descriptions.to_dict())
  return tools


def _sft(c, env_name: str) -> dict:
  sft = {k: c.sft[k] for k in ("steps", "batch_size", "num_demos", "learning_rate",
                               "warmup_steps")}
  sft["optimizer"] = {"schedule": "cosine", "total_steps": sft["steps"]}
  if env_name == "toolscale_mini":
    sft.update({k: c.sft[k] for k in TOOLSCALE_SFT})
  return sft


def _rl(c) -> dict:
  rl = c.rl
  out = {k: rl[k] for k in ("algorithm", "total_steps", "tasks_per_step", "group_size",
                            "learning_rate", "warmup_steps", "micro_batches", "aggregation",
                            "std_threshold", "invalid_format", "max_concurrent_episodes")}
  out["policy_loss"] = dataclasses.asdict(policy_loss_config(c))
  out["ppo"] = {k: rl[k] for k in ("value_learning_rate", "value_clip", "gamma", "gae_lambda")}
  return out


def unread_fields(config: ConfigDict) -> list[str]:
  """Fields of `config` that no code reads (see the module docstring), sorted."""
  tracker = ReadTracker(config)
  resolved_run(tracker)
  return sorted(f for f in flatten(config.to_dict()) if f not in tracker.seen)


def unread_message(config: ConfigDict, unread: list[str]) -> str:
  """'config.rl.totl_steps is read by no code (a typo?); nearest valid: total_steps; ...'"""
  parts = []
  for field in unread:
    parent, _, name = field.rpartition(".")
    node = config
    for key in filter(None, parent.split(".")):
      node = node[key]
    siblings = [k for k in node.keys() if k != name]
    near = difflib.get_close_matches(name, siblings, n=3)
    parts.append(f"config.{field} is read by no code (a typo or a dead field?)"
                 + (f"; nearest valid: {', '.join(near)}" if near else ""))
  return "; ".join(parts)
