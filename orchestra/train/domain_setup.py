"""A tau2-format domain as RL tasks: the policy talks to a user and calls the domain's tools.

`config.env.name = "tau2_domain"` (see configs/tau2_retail_cpu.py) trains on airline,
retail or any ToolScale-format domain (`config.env.domain` = a registered name, a
declarative domain's folder or name under `config.env.data`, or a module path, see
`orchestra.envs.domains.load_domain`). `config.env.domain = "all"` trains on every
declarative domain under `config.env.data/domains/` at once (what launch/synthesize.py
writes): a step's tasks are drawn uniformly from the union of their train splits, and
each episode runs in its own domain (its policy, tools and database). One episode:

  system: tau2's agent instruction + the domain policy + the preference instruction
  tools:  the domain's tools, plus `config.tools.names` (llm experts, e.g. call_expert)
  the conversation runs through `run_conversation` with the policy as `EngineAgent` and
  the user as `TicketUser` (offline; the task as a ticket, then ###STOP### at the agent's
  first message) or `LLMUser` (any OpenAI-compatible endpoint, `config.env.user = "llm"`)
  graded by tau2's evaluator (DB hash, actions, communicate_info, NL assertions when a
  judge is configured); correct = reward 1 (tau2's success).

The preference reward then weighs correct episodes' expert calls, cost (the policy's
tokens + experts) and latency, as on toolscale-mini (domain tools have no weight).
Teacher demonstrations are the tasks' gold actions followed by a closing message that
states `communicate_info`, replayed through the same loop against the ticket user; a demo
that does not reach reward 1 (e.g. its gold actions raise) is dropped.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

from ml_collections import ConfigDict

from orchestra.agent.chat_format import IM_END, render_prompt, tool_call_text
from orchestra.agent.episode import ScriptedEngine, Trajectory
from orchestra.agent.preferences import preference_instruction
from orchestra.engines import SamplingParams
from orchestra.envs.domains import Domain, Task, load_domain
from orchestra.envs.domains.declarative import declarative_folder
from orchestra.envs.domains.conversation import (FIRST_AGENT_MESSAGE, LLMUser, TicketUser,
                                                 agent_system_prompt, load_user_guidelines,
                                                 run_conversation, ticket_text)
from orchestra.envs.domains.engine_agent import EngineAgent
from orchestra.envs.domains.evaluate import evaluate_episode, is_success
from orchestra.envs.domains.replay import replay_gold
from orchestra.models.config import DecoderConfig
from orchestra.tools import Tool
from orchestra.train.setup_base import (ConfigValueError, Rollout, SetupBase, episode_config,
                                        model_config, run_tokenizer)

USERS = ("ticket", "llm")
ALL_DOMAINS = "all"


@dataclasses.dataclass(frozen=True)
class DomainTask:
  """A task with the domain it runs in (the unit `DomainSetup.tasks` hands the loop)."""

  domain: Domain
  task: Task

  @property
  def id(self) -> str:
    return f"{self.domain.name}/{self.task.id}"


def closing_message(task: Task) -> str:
  """The teacher's last message: done, plus every `communicate_info` string verbatim."""
  info = task.evaluation_criteria.communicate_info if task.evaluation_criteria else None
  return " ".join(["Your request is complete.", *(str(s) for s in info or [])])


@dataclasses.dataclass
class DomainSetup(SetupBase):
  config: ConfigDict
  domains: list[Domain]
  extra_tools: dict[str, Tool]                  # offered next to the domain tools
  tokenizer: Any = None
  model_config: DecoderConfig | None = None
  user_model: Any = None                        # the LLM user's ChatEndpoint ("llm" users)
  guidelines: str = ""                          # tau2's user-simulator guidelines
  nl_judge: Any = None                          # NL-assertion judge, or None (not evaluated)

  def tasks(self, split: str) -> list[DomainTask]:
    return [DomainTask(d, t) for d in self.domains for t in d.split(split)]

  def system_prompt(self, domain: Domain, preference_name: str) -> str:
    return (agent_system_prompt(domain.policy) + "\n\n"
            + preference_instruction(self.preference(preference_name), self.tool_names))

  def new_user(self):
    e = self.config.env
    if e.user == "ticket":
      return TicketUser()
    return LLMUser(self.user_model, self.guidelines, max_tokens=e.user_max_tokens,
                   temperature=e.user_temperature)

  async def rollout(self, engine, item: DomainTask, preference_name: str,
                    sampling: SamplingParams, user=None) -> Rollout:
    """One conversation of the policy on `item`'s task, graded by tau2's evaluator."""
    agent = EngineAgent(engine, self.tokenizer, sampling, episode_config(self.config))
    e = self.config.env
    domain, task = item.domain, item.task
    episode = await run_conversation(
        domain, task, agent, user or self.new_user(),
        extra_tools=list(self.extra_tools.values()), max_steps=e.max_steps,
        max_errors=e.max_errors, system_prompt=self.system_prompt(domain, preference_name))
    info = await evaluate_episode(domain, task, termination=episode.termination,
                                  tool_calls=episode.tool_calls, messages=episode.messages,
                                  nl_judge=self.nl_judge)
    return Rollout(agent.finish(episode), is_success(info.reward))

  def teacher_turns(self, item: DomainTask, preference_name: str, rng: random.Random) -> list:
    """The gold agent actions, then `closing_message` (the teacher ignores preference)."""
    del preference_name, rng
    return [(a.name, dict(a.arguments)) for a in item.task.gold_actions
            if a.requestor == "assistant"] + [closing_message(item.task)]

  async def demo(self, item: DomainTask, preference_name: str, turns: list) -> Trajectory | None:
    """The teacher's turns against the ticket user; None unless tau2's reward is 1."""
    rollout = await self.rollout(ScriptedEngine(self.tokenizer, turns), item, preference_name,
                                 SamplingParams(), user=TicketUser())
    return rollout.trajectory if rollout.correct else None

  def tokenizer_texts(self, rng: random.Random) -> list[str]:
    """Policy, tool schemas, tickets, gold calls and their outputs, closing messages."""
    extra = [t.schema() for t in self.extra_tools.values()]
    texts = [self.guidelines] if self.guidelines else []
    for item in self.tasks("train"):
      domain, task = item.domain, item.task
      preference = rng.choice(list(self.config.preferences))
      texts.append(render_prompt([
          {"role": "system", "content": self.system_prompt(domain, preference)},
          {"role": "assistant", "content": FIRST_AGENT_MESSAGE},
          {"role": "user", "content": ticket_text(task)}], domain.tool_schemas() + extra))
      for action in replay_gold(domain, task)["actions"]:
        texts.append(tool_call_text(action["name"], action["arguments"]) + IM_END)
        texts.append(action["output"])
      texts.append(closing_message(task) + IM_END)
    return texts


def validate_domain_config(config: ConfigDict) -> None:
  e = config.env
  if e.user not in USERS:
    raise ConfigValueError(f"config.env.user={e.user!r}: expected one of {USERS}")
  if e.user == "llm" and not (e.user_url and e.user_model):
    raise ConfigValueError("config.env.user='llm' needs config.env.user_url (an "
                           "OpenAI-compatible root including /v1) and config.env.user_model")
  llm = config.tools.get("llm", {}) or {}
  missing = [n for n in config.tools.names if n not in llm]
  if missing:
    raise ConfigValueError(f"config.tools.names {missing} have no spec in config.tools.llm "
                           "(on a tau2 domain the extra tools are llm experts: model, "
                           "base_url, api_key_env, prices, description)")
  for field in ("max_steps", "max_errors"):
    if e[field] < 1:
      raise ConfigValueError(f"config.env.{field}={e[field]} must be >= 1")


def load_domains(name: str, data: str) -> list[Domain]:
  """`config.env.domain`'s domains: one, or with "all" every declarative domain folder
  under `data/domains/` (in name order)."""
  try:
    if name != ALL_DOMAINS:
      return [load_domain(name, data)]
    root = os.path.join(data, "domains")
    names = sorted(n for n in os.listdir(root) if declarative_folder(n, data)) \
        if os.path.isdir(root) else []
    if not names:
      raise FileNotFoundError(f"no declarative domain folder (with tools.json) in {root}; "
                              "write some with launch/synthesize.py")
    return [load_domain(n, data) for n in names]
  except (FileNotFoundError, ValueError) as err:
    raise ConfigValueError(f"config.env.domain={name!r}, config.env.data={data!r}: "
                           f"{err}") from None


def build_domain_setup(config: ConfigDict, workdir: str) -> DomainSetup:
  """Loads the domain, the user simulator, the judge and the experts; trains the tokenizer."""
  validate_domain_config(config)
  e = config.env
  domains = load_domains(e.domain, e.data)
  for domain in domains:
    for what, split in (("training", "train"), ("config.eval.split", config.eval.split)):
      if split not in domain.splits:
        raise ConfigValueError(f"{what} needs split {split!r}; domain {domain.name!r} has "
                               f"splits {sorted(domain.splits)} (split_tasks.json)")
  from orchestra.tools.base import ToolConfigError
  from orchestra.tools.llm import LLMTool
  extra_tools = {}
  for name in config.tools.names:
    try:
      extra_tools[name] = LLMTool(name, **dict(config.tools.llm[name]))
    except (ToolConfigError, TypeError) as err:
      raise ConfigValueError(f"config.tools.llm.{name}: {err}") from None
  for domain in domains:
    clash = sorted(set(extra_tools) & set(domain.toolkit_cls.tool_names()))
    if clash:
      raise ConfigValueError(f"config.tools.names {clash} clash with {domain.name} tool names")
  setup = DomainSetup(config, domains, extra_tools)
  from orchestra.eval.endpoints import EndpointSpec, endpoint_from_spec, setting_names
  from orchestra.eval.judge import Judge, JudgeConfigError
  try:
    if e.user == "llm":
      setup.user_model = endpoint_from_spec(
          EndpointSpec(e.user_url, e.user_model, e.user_api_key_env, e.user_price_in,
                       e.user_price_out), setting_names("config.env.user_"))
      setup.guidelines = load_user_guidelines(e.data)
    if e.judge_url or e.judge_model:
      from orchestra.eval.tau2_judge import make_nl_judge
      setup.nl_judge = make_nl_judge(Judge(endpoint_from_spec(
          EndpointSpec(e.judge_url, e.judge_model, e.judge_api_key_env),
          setting_names("config.env.judge_")), os.path.join(workdir, "judge_cache")))
  except JudgeConfigError as err:
    raise ConfigValueError(str(err)) from None
  except FileNotFoundError as err:
    raise ConfigValueError(f"config.env (user simulator / judge): {err}") from None
  setup.tokenizer = run_tokenizer(setup, os.path.join(workdir, "tokenizer"))
  setup.model_config = model_config(config, setup.tokenizer)
  return setup
