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

from orchestra.sharding.mesh import MESH_AXES, resolve_mesh_shape
from orchestra.train.run_record import flatten
from orchestra.train.setup_base import (ConfigValueError, episode_config, mesh_devices,
                                        optimizer_config, policy_loss_config)

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

  def _field(self, key: str):
    if key not in self._config:
      raise ConfigValueError(f"config.{self._prefix}{key} is missing; this run reads it "
                             f"(fields here: {', '.join(sorted(self._config.keys()))})")
    return self._wrap(key, self._config[key])

  def __getattr__(self, key: str):
    if key.startswith("_"):
      raise AttributeError(key)
    return self._field(key)

  def __getitem__(self, key: str):
    return self._field(key)

  def __contains__(self, key: str) -> bool:
    return key in self._config

  def get(self, key: str, default=None):
    return self._wrap(key, self._config[key]) if key in self._config else default

  def keys(self):
    return list(self._config.keys())

  def __iter__(self):
    return iter(self.keys())

  def items(self):
    return [(k, self._wrap(k, self._config[k])) for k in self._config.keys()]

  def to_dict(self) -> dict:
    """Every field below, read (as a plain dict)."""
    return {k: v.to_dict() if isinstance(v, ReadTracker) else v for k, v in self.items()}


def resolved_run(config, model_config=None) -> dict:
  """The run's settings as the code uses them (JSON-able); reads every field it uses.

  `model_config` (the `DecoderConfig` the run builds: over its tokenizer, or from
  `config.model`), when given, adds the model's exact shape and parameter count.
  """
  c = config
  env = _env(c)
  run = {
      "seed": c.seed,
      "env": env,
      "tools": _tools(c, env["name"]),
      "model": c.model.to_dict(),
      "mesh": _mesh(c),
      "rollout": _rollout(c),
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
                    "decoder": model_config.to_dict()}
  return run


def _env(c) -> dict:
  name = c.env.get("name", "toolscale_mini")
  if name == "tau2_domain":
    return c.env.to_dict()          # domain, data, user simulator, judge, limits
  if name == "qa":
    return {"name": name, "benchmark": c.env.benchmark, "data": c.env.data,
            "test_data": c.env.test_data}
  return {"name": name, "seed": c.env.seed, "n_entities": c.env.n_entities,
          "n_tasks": c.env.n_tasks}


def _tools(c, env_name: str) -> dict:
  tools = {"names": list(c.tools.names)}
  if env_name == "tau2_domain":
    tools["llm"] = c.tools.llm.to_dict()
  elif env_name == "qa":
    tools.update(index_dir=c.tools.index_dir, search_top_k=c.tools.search_top_k,
                 code_timeout_s=c.tools.code_timeout_s, llm=c.tools.llm.to_dict())
  else:
    tools.update(code_timeout_s=c.tools.code_timeout_s, search_top_k=c.tools.search_top_k,
                 descriptions=c.tools.descriptions.to_dict())
  return tools


def _mesh(c) -> dict:
  n = mesh_devices(c)
  return {"shape": dict(zip(MESH_AXES, resolve_mesh_shape(c.mesh.shape, n))), "num_devices": n}


def _rollout(c) -> dict:
  """The rollout engine; the server fields are optional unless `rollout.engine = "http"`."""
  keys = ("server", "launch", "urls", "served_model_name", "tensor_parallel_size",
          "weight_sync", "sync_dir")
  lag = {"max_staleness": c.rollout.max_staleness}
  if c.rollout.engine == "jax":                # kept so that --config.rollout.engine=http works
    return {"engine": "jax", **lag, **{k: c.rollout.get(k) for k in keys if k in c.rollout}}
  return {"engine": c.rollout.engine, **lag, **{k: c.rollout[k] for k in keys}}


def _sft(c, env_name: str) -> dict:
  """SFT's settings; with `sft.steps = 0` the others are optional (nothing uses them)."""
  keys = ("batch_size", "num_demos", "learning_rate", "warmup_steps")
  keys += TOOLSCALE_SFT if env_name == "toolscale_mini" else ()
  if c.sft.steps == 0:
    return {"steps": 0, **{k: c.sft.get(k) for k in keys if k in c.sft}}
  return {"steps": c.sft.steps, **{k: c.sft[k] for k in keys},
          "optimizer": dataclasses.asdict(optimizer_config(c, "sft"))}


def _rl(c) -> dict:
  """RL's settings; the PPO-only fields are optional unless `rl.algorithm = "ppo"`."""
  rl = c.rl
  out = {k: rl[k] for k in ("algorithm", "total_steps", "tasks_per_step", "group_size",
                            "warmup_steps", "micro_batches", "aggregation",
                            "std_threshold", "invalid_format", "max_concurrent_episodes")}
  out["optimizer"] = dataclasses.asdict(optimizer_config(c, "rl"))
  out["policy_loss"] = dataclasses.asdict(policy_loss_config(c))
  ppo_keys = ("value_learning_rate", "value_clip", "gamma", "gae_lambda")
  if rl.algorithm == "ppo":
    out["ppo"] = {"active": True, **{k: rl[k] for k in ppo_keys},
                  "value_optimizer": dataclasses.asdict(optimizer_config(c, "value"))}
  else:                                # kept so that --config.rl.algorithm=ppo just works
    out["ppo"] = {"active": False, **{k: rl.get(k) for k in ppo_keys if k in rl}}
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
