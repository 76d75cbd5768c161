"""Everything a run builds once from its config: environment, tokenizer, index, tools, prompts.

Shared by `launch/train.py` and `launch/eval.py`. Artefacts that take time
to build (the tokenizer, the search index) are written into the workdir
once and reused, so a resumed run sees exactly the same ones.
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
from ml_collections import ConfigDict

from orchestra.agent.chat_format import IM_END, render_prompt, tool_call_text
from orchestra.agent.preferences import preference_instruction
from orchestra.envs import SimulatedExpert, Task, ToolScaleMini, default_experts
from orchestra.models.config import DecoderConfig
from orchestra.tools import Presented, Tool, build_tool

SYSTEM_PROMPT = "You orchestrate tools to answer questions. Call one tool per turn; finish with answer."


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
  for field in ("sft.steps", "rl.total_steps"):
    stage, key = field.split(".")
    if config[stage][key] < 0:
      raise ConfigValueError(f"config.{field}={config[stage][key]} must be >= 0")
  if config.rl.algorithm not in ("grpo", "rloo", "ppo"):
    raise ConfigValueError(f"config.rl.algorithm={config.rl.algorithm!r}: "
                           "expected grpo, rloo or ppo")
  if config.rl.invalid_format not in ("zero", "drop"):
    raise ConfigValueError(f"config.rl.invalid_format={config.rl.invalid_format!r}: "
                           "expected zero or drop")
  unknown_tools = [t for t in config.tools.names
                   if t not in ("code_interpreter", "local_search")
                   and t not in {e.name for e in default_experts(0)}]
  if unknown_tools:
    raise ConfigValueError(f"config.tools.names has unknown tools {unknown_tools}")


@dataclasses.dataclass
class RunSetup:
  config: ConfigDict
  env: ToolScaleMini
  tokenizer: object
  real_tools: dict[str, Tool]                 # shared across episodes
  experts: dict[str, SimulatedExpert]         # bound to each task
  model_config: DecoderConfig

  @property
  def tool_names(self) -> tuple[str, ...]:
    return tuple(self.config.tools.names)

  def tools_for(self, task: Task) -> dict[str, Tool]:
    """The tool set of one episode: real tools, experts bound to `task`, and `answer`."""
    tools = {}
    for name in (*self.tool_names, "answer"):
      tool = self.real_tools[name] if name in self.real_tools else self.experts[name].for_task(task)
      brief = self.config.tools.get("descriptions", {}).get(name)
      tools[name] = Presented(tool, brief) if brief else tool
    return tools

  def preference(self, name: str) -> np.ndarray:
    return np.asarray(self.config.preferences[name], np.float64)

  def preferred_expert(self, preference_name: str) -> str:
    """The scripted teacher's rule of thumb: the offered expert a preference points to.

    It knows what the tool descriptions say (prices and latencies), not the experts'
    accuracies: score = w_cost * cheapness + w_latency * speed, each min-max scaled over
    the offered experts (1 = cheapest / fastest); ties, e.g. when only accuracy matters,
    go to the most expensive expert, taken as the strongest.
    """
    *_, _, w_cost, w_latency = self.preference(preference_name)
    experts = [self.experts[n] for n in self.tool_names if n in self.experts]
    price = {e.name: e.price_in_per_1m + e.price_out_per_1m for e in experts}
    latency = {e.name: e.latency_s for e in experts}

    def scaled_best(values, name):
      lo, hi = min(values.values()), max(values.values())
      return 0.0 if hi == lo else (hi - values[name]) / (hi - lo)

    return max(price, key=lambda n: (w_cost * scaled_best(price, n)
                                     + w_latency * scaled_best(latency, n), price[n]))

  def messages(self, task: Task, preference_name: str) -> list[dict]:
    instruction = preference_instruction(self.preference(preference_name), self.tool_names)
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{task.question}\n{instruction}"}]


def build_setup(config: ConfigDict, workdir: str) -> RunSetup:
  validate(config)
  env = ToolScaleMini(seed=config.env.seed, n_entities=config.env.n_entities,
                      n_tasks=config.env.n_tasks)
  real_tools = {"answer": build_tool({"type": "answer"})}
  if "code_interpreter" in config.tools.names:
    real_tools["code_interpreter"] = build_tool({"type": "code_interpreter",
                                                 "timeout_s": config.tools.code_timeout_s})
  if "local_search" in config.tools.names:
    index_dir = os.path.join(workdir, "index")
    if not os.path.isfile(os.path.join(index_dir, "meta.json")):
      env.build_search_index(index_dir)
    real_tools["local_search"] = build_tool({"type": "local_search", "index_dir": index_dir,
                                             "top_k": config.tools.search_top_k})
  experts = {e.name: e for e in default_experts(config.env.seed)}
  setup = RunSetup(config, env, None, real_tools, experts, None)
  setup.tokenizer = _tokenizer(setup, os.path.join(workdir, "tokenizer"))
  m = config.model
  setup.model_config = DecoderConfig(
      "qwen3", vocab_size=len(setup.tokenizer), hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, qk_norm=True,
      eos_token_id=setup.tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=0)
  return setup


def _tokenizer(setup: RunSetup, path: str):
  """Loads the run's tokenizer, or trains one on the environment's own text and saves it."""
  from transformers import AutoTokenizer

  from orchestra.agent.tokenizer import train_tokenizer
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
  rng = random.Random(0)
  texts = list(setup.env.texts())
  schemas = [t.schema() for t in setup.tools_for(setup.env.tasks("train")[0]).values()]
  for task in rng.sample(setup.env.tasks("train"), 600):
    preference = rng.choice(list(setup.config.preferences))
    texts.append(render_prompt(setup.messages(task, preference), schemas))
    for name, args in setup.env.teacher_calls(task, setup.tool_names, rng,
                                              setup.preferred_expert(preference)):
      texts.append(tool_call_text(name, args) + IM_END)
  tokenizer = train_tokenizer(texts, setup.config.model.vocab_size, split_words=False,
                              split_digits=True)
  tokenizer.save_pretrained(path)
  return tokenizer
