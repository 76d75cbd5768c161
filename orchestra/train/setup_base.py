"""What every run setup shares: config checks, the loss/episode settings, the run's tokenizer.

`orchestra.train.setup` (toolscale-mini) and `orchestra.train.domain_setup` (tau2-format
domains) both build on this module; `build_setup` in `setup` picks one by
`config.env.name`.
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
from ml_collections import ConfigDict

from orchestra.agent.chat_format import IM_END
from orchestra.agent.episode import EpisodeConfig, Trajectory
from orchestra.envs import default_experts
from orchestra.models.config import DecoderConfig
from orchestra.rl.update import PolicyLossConfig

ENVS = ("toolscale_mini", "tau2_domain")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_sum_norm")
@dataclasses.dataclass
class Rollout:
  """One graded episode: the trajectory and whether the task was solved."""
  trajectory: Trajectory
  correct: bool


def policy_loss_config(config: ConfigDict) -> PolicyLossConfig:
  """`config.rl.loss` as the loss's dataclass, at the sampler's temperature."""
  return PolicyLossConfig(**config.rl.loss.to_dict(), temperature=config.episode.temperature)


def episode_config(config: ConfigDict) -> EpisodeConfig:
  e = config.episode
  return EpisodeConfig(max_turns=e.max_turns, max_total_tokens=e.max_total_tokens,
                       max_observation_tokens=e.max_observation_tokens,
                       price_in_per_1m=e.policy_price_in_per_1m,
                       price_out_per_1m=e.policy_price_out_per_1m,
                       generation_latency_per_token_s=e.get("policy_latency_per_token_s"))


class ConfigValueError(ValueError):
  """A config value that cannot work; the message names the field."""


def validate(config: ConfigDict) -> None:
  """Checks the fields a typo or a bad override would break, naming the field."""
  n = len(config.tools.names) + 3
  for name, vector in config.preferences.items():
    if len(vector) != n:
      raise ConfigValueError(f"config.preferences.{name} has {len(vector)} entries; expected {n} "
                             f"(one per tool in config.tools.names, then outcome, cost, latency)")
  for field in ("train_preferences", "eval.preferences"):
    names = config.train_preferences if field == "train_preferences" else config.eval.preferences
    unknown = [p for p in names if p not in config.preferences]
    if unknown:
      raise ConfigValueError(f"config.{field} names {unknown}, not in config.preferences "
                             f"({sorted(config.preferences)})")
  positive = {"sft.batch_size": config.sft.batch_size, "rl.tasks_per_step": config.rl.tasks_per_step,
              "rl.group_size": config.rl.group_size, "episode.max_turns": config.episode.max_turns,
              "episode.turn_tokens": config.episode.turn_tokens}
  for field, value in positive.items():
    if value < 1:
      raise ConfigValueError(f"config.{field}={value} must be >= 1")
  for field in ("sft.learning_rate", "rl.learning_rate", "rl.value_learning_rate"):
    stage, key = field.split(".")
    if not config[stage][key] > 0:
      raise ConfigValueError(f"config.{field}={config[stage][key]} must be > 0")
  for field in ("sft.steps", "rl.total_steps"):
    stage, key = field.split(".")
    if config[stage][key] < 0:
      raise ConfigValueError(f"config.{field}={config[stage][key]} must be >= 0")
  if not config.episode.temperature > 0:
    raise ConfigValueError(f"config.episode.temperature={config.episode.temperature} must be "
                           "> 0: RL samples rollouts and scores log-probs at that temperature "
                           "(greedy decoding is config.eval.temperature)")
  try:
    policy_loss_config(config)
  except (TypeError, ValueError) as e:
    raise ConfigValueError(f"config.rl.loss: {e}") from None
  if config.rl.micro_batches < 1:
    raise ConfigValueError(f"config.rl.micro_batches={config.rl.micro_batches} must be >= 1")
  if config.rl.aggregation not in AGGREGATIONS:
    raise ConfigValueError(f"config.rl.aggregation={config.rl.aggregation!r}: expected one of "
                           f"{AGGREGATIONS}")
  if config.rl.algorithm not in ("grpo", "rloo", "ppo"):
    raise ConfigValueError(f"config.rl.algorithm={config.rl.algorithm!r}: "
                           "expected grpo, rloo or ppo")
  if config.rl.invalid_format not in ("zero", "drop"):
    raise ConfigValueError(f"config.rl.invalid_format={config.rl.invalid_format!r}: "
                           "expected zero or drop")
  env = config.env.get("name", "toolscale_mini")
  if env not in ENVS:
    raise ConfigValueError(f"config.env.name={env!r}: expected one of {ENVS}")
  if env == "toolscale_mini":
    for field in ("expert_demo_fraction", "preferred_expert_fraction"):
      if not 0 <= config.sft[field] <= 1:
        raise ConfigValueError(f"config.sft.{field}={config.sft[field]} must be in [0, 1]")
    unknown_tools = [t for t in config.tools.names
                     if t not in ("code_interpreter", "local_search")
                     and t not in {e.name for e in default_experts(0)}]
    if unknown_tools:
      raise ConfigValueError(f"config.tools.names has unknown tools {unknown_tools}")


class SetupBase:
  """What every setup derives from its config: the preference tools and vectors."""

  config: ConfigDict

  @property
  def tool_names(self) -> tuple[str, ...]:
    """The tools a preference vector weighs, in its order (then outcome, cost, latency)."""
    return tuple(self.config.tools.names)

  def preference(self, name: str) -> np.ndarray:
    return np.asarray(self.config.preferences[name], np.float64)


def model_config(config: ConfigDict, tokenizer) -> DecoderConfig:
  """The Qwen3-shaped decoder of `config.model` over the run's tokenizer."""
  m = config.model
  return DecoderConfig(
      "qwen3", vocab_size=len(tokenizer), hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, qk_norm=True,
      eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=0)


def run_tokenizer(setup, path: str):
  """Loads the run's tokenizer, or trains one on `setup.tokenizer_texts` and saves it."""
  from transformers import AutoTokenizer

  from orchestra.agent.tokenizer import train_tokenizer
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
  tokenizer = train_tokenizer(setup.tokenizer_texts(random.Random(0)),
                              setup.config.model.vocab_size, split_words=False,
                              split_digits=True)
  tokenizer.save_pretrained(path)
  return tokenizer
