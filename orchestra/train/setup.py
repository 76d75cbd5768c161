"""Everything a run builds once from its config: environment, tokenizer, tools, prompts.

Shared by `launch/train.py` and `launch/eval.py`. Artefacts that take time
to build (the tokenizer, the search index) are written into the workdir
once and reused, so a resumed run sees exactly the same ones.

`build_setup` picks the setup by `config.env.name`:
  toolscale_mini  `RunSetup` here: single-question episodes ending in `answer`
  tau2_domain     `orchestra.train.domain_setup.DomainSetup`: conversational episodes on a
                  tau2-format domain (airline, retail, or any ToolScale-format domain)
  qa              `orchestra.train.qa_setup.QASetup`: questions from a benchmark file, real
                  tools and LLM experts, from an instruct checkpoint (RL only)
Both give the training loop the same interface:
  tasks(split) -> tasks;  tool_names;  preference(name) -> vector;  tokenizer, model_config
  await rollout(engine, task, preference_name, sampling) -> Rollout(trajectory, correct)
  teacher_turns(task, preference_name, rng) -> a scripted teacher's turns (consumes rng)
  await demo(task, preference_name, turns) -> the teacher's Trajectory, or None if it failed
"""

from __future__ import annotations

import dataclasses
import os
import random

from ml_collections import ConfigDict

from orchestra.agent.chat_format import IM_END, render_prompt, tool_call_text
from orchestra.agent.episode import ScriptedEngine, Trajectory, run_episode
from orchestra.agent.preferences import preference_instruction
from orchestra.engines import SamplingParams
from orchestra.envs import SimulatedExpert, Task, ToolScaleMini, default_experts
from orchestra.models.config import DecoderConfig
from orchestra.tools import Presented, Tool, build_tool
from orchestra.train.domain_setup import build_domain_setup
from orchestra.train.qa_setup import build_qa_setup
from orchestra.train.resolve import ReadTracker, unread_fields, unread_message
from orchestra.train.setup_base import (ConfigValueError, Rollout, SetupBase, episode_config,
                                        model_config, run_tokenizer, validate)

SYSTEM_PROMPT = "You orchestrate tools to answer questions. Call one tool per turn; finish with answer."


@dataclasses.dataclass
class RunSetup(SetupBase):
  config: ConfigDict
  env: ToolScaleMini
  tokenizer: object
  real_tools: dict[str, Tool]                 # shared across episodes
  experts: dict[str, SimulatedExpert]         # bound to each task
  model_config: DecoderConfig

  def tools_for(self, task: Task) -> dict[str, Tool]:
    """The tool set of one episode: real tools, experts bound to `task`, and `answer`."""
    tools = {}
    for name in (*self.tool_names, "answer"):
      tool = self.real_tools[name] if name in self.real_tools else self.experts[name].for_task(task)
      brief = self.config.tools.get("descriptions", {}).get(name)
      tools[name] = Presented(tool, brief) if brief else tool
    return tools

  def preferred_expert(self, preference_name: str) -> str:
    """The scripted teacher's rule of thumb: the offered expert a preference points to.

    It knows what a tool's model card would say: price, latency and overall strength
    (the expert's accuracy averaged over task kinds), not how accurate it is on each
    kind of task, which RL has to learn:

        score = w_outcome * strength + w_cost * cheapness + w_latency * speed,

    each term min-max scaled over the offered experts (1 = strongest / cheapest /
    fastest); ties go to the most expensive expert.
    """
    *_, w_outcome, w_cost, w_latency = self.preference(preference_name)
    experts = [self.experts[n] for n in self.tool_names if n in self.experts]
    strength = {e.name: sum(e.accuracy.values()) / len(e.accuracy) for e in experts}
    cheapness = {e.name: -(e.price_in_per_1m + e.price_out_per_1m) for e in experts}
    speed = {e.name: -e.latency_s for e in experts}

    def scaled(values, name):
      lo, hi = min(values.values()), max(values.values())
      return 0.0 if hi == lo else (values[name] - lo) / (hi - lo)

    return max(strength, key=lambda n: (w_outcome * scaled(strength, n)
                                        + w_cost * scaled(cheapness, n)
                                        + w_latency * scaled(speed, n), -cheapness[n]))

  def messages(self, task: Task, preference_name: str) -> list[dict]:
    instruction = preference_instruction(self.preference(preference_name), self.tool_names)
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{task.question}\n{instruction}"}]

  def tasks(self, split: str) -> list[Task]:
    return self.env.tasks(split)

  async def rollout(self, engine, task: Task, preference_name: str,
                    sampling: SamplingParams) -> Rollout:
    traj = await run_episode(engine, self.tokenizer, self.tools_for(task),
                             self.messages(task, preference_name), sampling,
                             episode_config(self.config))
    return Rollout(traj, bool(self.env.grade(task, traj.answer)))

  def teacher_turns(self, task: Task, preference_name: str, rng: random.Random) -> list:
    """The scripted teacher's calls on `task` (real tools or an expert, see `teacher_calls`)."""
    return self.env.teacher_calls(task, self.tool_names, rng,
                                  self.preferred_expert(preference_name),
                                  self.config.sft.expert_demo_fraction,
                                  self.config.sft.preferred_expert_fraction)

  async def demo(self, task: Task, preference_name: str, turns: list) -> Trajectory | None:
    """The teacher's `turns` replayed through the episode loop; None if it did not answer."""
    traj = await run_episode(ScriptedEngine(self.tokenizer, turns), self.tokenizer,
                             self.tools_for(task), self.messages(task, preference_name),
                             SamplingParams(), episode_config(self.config))
    return traj if traj.finish_reason == "answer" else None

  def tokenizer_texts(self, rng: random.Random) -> list[str]:
    """The environment's text, prompts and teacher turns: what the tokenizer is trained on."""
    texts = list(self.env.texts())
    schemas = [t.schema() for t in self.tools_for(self.env.tasks("train")[0]).values()]
    for task in rng.sample(self.env.tasks("train"), 600):
      preference = rng.choice(list(self.config.preferences))
      texts.append(render_prompt(self.messages(task, preference), schemas))
      for name, args in self.teacher_turns(task, preference, rng):
        texts.append(tool_call_text(name, args) + IM_END)
    return texts


def check_config(config: ConfigDict) -> None:
  """Bad values, and fields no code reads (typos, dead fields; `orchestra.train.resolve`),
  end in a `ConfigValueError` naming them, as does a missing field. Writes nothing."""
  validate(ReadTracker(config))
  unread = unread_fields(config)
  if unread:
    raise ConfigValueError(unread_message(config, unread))


def build_setup(config: ConfigDict, workdir: str):
  """The run's setup for `config.env.name` (see the module docstring), after `check_config`."""
  check_config(config)
  env_name = config.env.get("name", "toolscale_mini")
  if env_name == "tau2_domain":
    return build_domain_setup(config, workdir)
  if env_name == "qa":
    return build_qa_setup(config, workdir)
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
  setup.tokenizer = run_tokenizer(setup, os.path.join(workdir, "tokenizer"))
  setup.model_config = model_config(config, setup.tokenizer)
  return setup
