"""What every run setup shares: config checks, the loss/episode settings, the run's tokenizer.

`orchestra.train.setup` (toolscale-mini) and `orchestra.train.domain_setup` (tau2-format
domains) both build on this module; `build_setup` in `setup` picks one by
`config.env.name`.
"""

from __future__ import annotations

import dataclasses
import os
import random

import jax
import numpy as np
from ml_collections import ConfigDict

from orchestra.agent.chat_format import IM_END
from orchestra.agent.episode import EpisodeConfig, Trajectory
from orchestra.envs import default_experts
from orchestra.envs.qa import BENCHMARKS
from orchestra.models.config import DecoderConfig, MemoryOptions, RopeConfig
from orchestra.models.fused_attention import fused_implementation
from orchestra.rl.update import OptimizerConfig, PolicyLossConfig
from orchestra.sharding.mesh import MeshError, resolve_mesh_shape

ENVS = ("toolscale_mini", "tau2_domain", "qa")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_sum_norm")
DTYPES = ("float32", "bfloat16")
ROLLOUT_ENGINES = ("jax", "http")
QA_TOOLS = ("local_search", "web_search", "code_interpreter")    # + config.tools.llm experts


@dataclasses.dataclass
class Rollout:
  """One graded episode: the trajectory and whether the task was solved."""
  trajectory: Trajectory
  correct: bool


def policy_loss_config(config: ConfigDict) -> PolicyLossConfig:
  """`config.rl.loss` as the loss's dataclass, at the sampler's temperature."""
  return PolicyLossConfig(**config.rl.loss.to_dict(), temperature=config.episode.temperature)


# The config field behind each OptimizerConfig field that `optimizer_config` sets, per stage.
OPTIMIZER_FIELDS = {
    "sft": {"learning_rate": "sft.learning_rate", "warmup_steps": "sft.warmup_steps",
            "total_steps": "sft.steps"},
    "rl": {"learning_rate": "rl.learning_rate", "warmup_steps": "rl.warmup_steps"},
    "value": {"learning_rate": "rl.value_learning_rate", "warmup_steps": "rl.warmup_steps"},
}


def optimizer_config(config: ConfigDict, stage: str) -> OptimizerConfig:
  """The optimizer of one stage, from its config subtree (the one place it is built).

    "sft"    sft.learning_rate, linear warmup over sft.warmup_steps, cosine to 0 at sft.steps
    "rl"     rl.learning_rate, linear warmup over rl.warmup_steps, then constant
    "value"  PPO's critic: rl.value_learning_rate with rl's warmup, then constant
  """
  if stage == "sft":
    return OptimizerConfig(learning_rate=config.sft.learning_rate,
                           warmup_steps=config.sft.warmup_steps, schedule="cosine",
                           total_steps=config.sft.steps)
  rate = {"rl": "learning_rate", "value": "value_learning_rate"}[stage]
  return OptimizerConfig(learning_rate=config.rl[rate], warmup_steps=config.rl.warmup_steps)


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
  _validate_env_and_tools(config)
  _validate_preferences(config)
  _validate_counts(config)
  _validate_rl(config)
  _validate_model(config)


def _validate_preferences(config: ConfigDict) -> None:
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


def _validate_counts(config: ConfigDict) -> None:
  positive = {"rl.tasks_per_step": config.rl.tasks_per_step,
              "rl.group_size": config.rl.group_size, "rl.micro_batches": config.rl.micro_batches,
              "episode.turn_tokens": config.episode.turn_tokens}
  if config.sft.steps > 0:
    positive["sft.batch_size"] = config.sft.batch_size
  for field, value in positive.items():
    if value < 1:
      raise ConfigValueError(f"config.{field}={value} must be >= 1")
  for field in ("sft.steps", "rl.total_steps"):
    stage, key = field.split(".")
    if config[stage][key] < 0:
      raise ConfigValueError(f"config.{field}={config[stage][key]} must be >= 0")
  try:
    episode_config(config)
  except ValueError as e:
    raise ConfigValueError(f"config.episode: {e}") from None
  if not config.episode.temperature > 0:
    raise ConfigValueError(f"config.episode.temperature={config.episode.temperature} must be "
                           "> 0: RL samples rollouts and scores log-probs at that temperature "
                           "(greedy decoding is config.eval.temperature)")


def _validate_rl(config: ConfigDict) -> None:
  stages = ("sft",) if config.sft.steps > 0 else ()
  stages += ("rl", "value") if config.rl.algorithm == "ppo" else ("rl",)
  for stage in stages:
    try:
      optimizer_config(config, stage)
    except ValueError as e:
      message = str(e)                 # "learning_rate=-0.1 must be > 0" -> the config field
      for name, field in OPTIMIZER_FIELDS[stage].items():
        message = message.replace(f"{name}=", f"config.{field}=")
      raise ConfigValueError(message) from None
  try:
    policy_loss_config(config)
  except (TypeError, ValueError) as e:
    raise ConfigValueError(f"config.rl.loss: {e}") from None
  choices = {"aggregation": AGGREGATIONS, "algorithm": ("grpo", "rloo", "ppo"),
             "invalid_format": ("zero", "drop")}
  for field, allowed in choices.items():
    if config.rl[field] not in allowed:
      raise ConfigValueError(f"config.rl.{field}={config.rl[field]!r}: expected one of {allowed}")


def mesh_devices(config: ConfigDict) -> int:
  """How many devices `config.mesh` spans: `mesh.num_devices`, 0 meaning all JAX sees."""
  return config.mesh.num_devices or jax.device_count()


def memory_options(config: ConfigDict) -> MemoryOptions:
  """`config.model`'s remat, attention and logits chunk (`MemoryOptions`)."""
  m = config.model
  try:
    return MemoryOptions(remat=m.remat, attention=m.attention, logits_chunk=m.logits_chunk)
  except ValueError as e:
    raise ConfigValueError(f"config.model: {e}") from None


def _validate_model(config: ConfigDict) -> None:
  if config.model.dtype not in DTYPES:
    raise ConfigValueError(f"config.model.dtype={config.model.dtype!r}: expected one of {DTYPES}")
  memory_options(config)
  if (config.model.attention == "fused" and config.model.dtype == "float32"
      and fused_implementation() == "cudnn"):
    raise ConfigValueError("config.model.attention='fused' runs cuDNN's flash kernel, which "
                           "takes bfloat16: set config.model.dtype='bfloat16' (or attention="
                           "'blockwise')")
  try:
    resolve_mesh_shape(config.mesh.shape, mesh_devices(config))
  except MeshError as e:
    raise ConfigValueError(f"config.mesh: {e}") from None
  r = config.rollout
  choices = {"engine": ROLLOUT_ENGINES}
  if r.engine == "http":
    choices.update(server=("vllm", "orchestra"), weight_sync=("disk",))
    if bool(r.urls) == bool(r.launch):
      raise ConfigValueError(f"config.rollout.urls={tuple(r.urls)} and config.rollout.launch="
                             f"{r.launch}: give one, servers to use or how many to start")
    if r.launch < 0:
      raise ConfigValueError(f"config.rollout.launch={r.launch} must be >= 0")
  for field, allowed in choices.items():
    if r[field] not in allowed:
      raise ConfigValueError(f"config.rollout.{field}={r[field]!r}: expected one of {allowed}")
  _validate_staleness(config)


def _validate_staleness(config: ConfigDict) -> None:
  lag = config.rollout.max_staleness
  if lag not in (0, 1):
    raise ConfigValueError(f"config.rollout.max_staleness={lag!r}: expected 0 (on-policy) or 1 "
                           "(the next step sampled during this step's update)")
  if lag and config.rollout.engine != "http":
    raise ConfigValueError("config.rollout.max_staleness=1 samples during the update, which the "
                           "in-process engine cannot (it shares the learner's devices and "
                           "parameter buffers): set config.rollout.engine='http'")
  if lag and config.rl.loss.tis_cap is None:
    raise ConfigValueError("config.rollout.max_staleness=1 trains on episodes sampled one update "
                           "earlier: set config.rl.loss.tis_cap (e.g. 2.0), the truncated "
                           "importance weight that corrects for the older sampler")


def _validate_env_and_tools(config: ConfigDict) -> None:
  env = config.env.get("name", "toolscale_mini")
  if env not in ENVS:
    raise ConfigValueError(f"config.env.name={env!r}: expected one of {ENVS}")
  if env == "toolscale_mini":
    for field in ("expert_demo_fraction", "preferred_expert_fraction"):
      if not 0 <= config.sft[field] <= 1:
        raise ConfigValueError(f"config.sft.{field}={config.sft[field]} must be in [0, 1]")
    known = {"code_interpreter", "local_search"} | {e.name for e in default_experts(0)}
  elif env == "qa":
    if config.env.benchmark not in BENCHMARKS:
      raise ConfigValueError(f"config.env.benchmark={config.env.benchmark!r}: expected one of "
                             f"{BENCHMARKS}")
    known = set(QA_TOOLS) | set(config.tools.llm)
    if config.sft.steps:
      raise ConfigValueError(f"config.sft.steps={config.sft.steps}: a QA run has no scripted "
                             "teacher to imitate; it starts from config.model.init_from and "
                             "goes straight to RL (set config.sft.steps=0)")
  else:
    return                              # tau2 domains: orchestra.train.domain_setup checks
  unknown_tools = [t for t in config.tools.names if t not in known]
  if unknown_tools:
    raise ConfigValueError(f"config.tools.names has unknown tools {unknown_tools}; "
                           f"expected some of {sorted(known)}")


class SetupBase:
  """What every setup derives from its config: the preference tools and vectors."""

  config: ConfigDict

  @property
  def tool_names(self) -> tuple[str, ...]:
    """The tools a preference vector weighs, in its order (then outcome, cost, latency)."""
    return tuple(self.config.tools.names)

  def preference(self, name: str) -> np.ndarray:
    return np.asarray(self.config.preferences[name], np.float64)


SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "tie_word_embeddings")


def model_config(config: ConfigDict, tokenizer=None) -> DecoderConfig:
  """The decoder the run trains (the one place it is built).

  With `config.model.init_from`, the starting policy's own config.json (its vocabulary and
  stop ids), which `config.model` must describe (`check_init_from`); otherwise
  `declared_model_config`.
  """
  if config.model.init_from:
    hf = DecoderConfig.from_hf_dir(config.model.init_from)
    check_init_from(config, hf)
    return hf
  return declared_model_config(config, tokenizer)


def declared_model_config(config: ConfigDict, tokenizer=None) -> DecoderConfig:
  """The Qwen3-shaped decoder `config.model` describes.

  With the run's own `tokenizer`, its size is the vocabulary and `<|im_end|>` the end of
  turn; without one (a dry run), `config.model.vocab_size` is taken as it is.
  """
  m = config.model
  vocab = m.vocab_size if tokenizer is None else len(tokenizer)
  eos = None if tokenizer is None else tokenizer.convert_tokens_to_ids(IM_END)
  return DecoderConfig(
      "qwen3", vocab_size=vocab, hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, rope=RopeConfig(theta=m.rope_theta),
      tie_word_embeddings=m.tie_word_embeddings, qk_norm=True, eos_token_id=eos,
      pad_token_id=None if tokenizer is None else 0)


def check_init_from(config: ConfigDict, hf: DecoderConfig) -> None:
  """`config.model` must describe the checkpoint it starts from; names each field that differs."""
  mine = declared_model_config(config)
  differ = [f"config.model.{f}={getattr(mine, f)!r} but {config.model.init_from}/config.json "
            f"has {getattr(hf, f)!r}" for f in SHAPE_FIELDS if getattr(mine, f) != getattr(hf, f)]
  if mine.rope.theta != hf.rope.theta:
    differ.append(f"config.model.rope_theta={mine.rope.theta} but the checkpoint has "
                  f"{hf.rope.theta}")
  if differ:
    raise ConfigValueError("; ".join(differ))


def run_tokenizer(setup, path: str):
  """The run's tokenizer, saved at `path` (where servers and exports read it).

  Loaded from `path` when a run already saved it; else the starting policy's
  (`config.model.init_from`, with its chat template); else trained on
  `setup.tokenizer_texts`.
  """
  from orchestra.agent.tokenizer import load_tokenizer, train_tokenizer
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    return load_tokenizer(path)
  init_from = setup.config.model.init_from
  if init_from:
    if not os.path.isfile(os.path.join(init_from, "config.json")):
      raise ConfigValueError(f"config.model.init_from={init_from!r}: not a Hugging Face model "
                             "folder (no config.json there)")
    tokenizer = load_tokenizer(init_from)
    if not tokenizer.chat_template:
      raise ConfigValueError(f"config.model.init_from={init_from!r}: its tokenizer has no chat "
                             "template; the episode renders prompts with it")
  else:
    tokenizer = train_tokenizer(setup.tokenizer_texts(random.Random(0)),
                                setup.config.model.vocab_size, split_words=False,
                                split_digits=True)
  tokenizer.save_pretrained(path)
  return tokenizer
