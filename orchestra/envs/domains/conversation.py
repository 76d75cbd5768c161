"""Conversational tau2 episodes: an agent talks to a simulated user and calls domain tools.

The loop follows tau2-bench's orchestrator (MIT):

  agent greets ("Hi! How can I help you today?")
  repeat:
    user simulator replies            -> ends the episode if it says ###STOP###,
                                         ###TRANSFER### or ###OUT-OF-SCOPE### (user_stop)
    agent replies, calling tools until it writes text
                                      -> text containing ###STOP### ends it (agent_stop)
  every agent reply, user reply, and batch of tool results of one agent reply is one step;
  `max_steps` steps end the episode (max_steps), and so do more than `max_errors` failed
  tool calls
  (too_many_errors) or an endpoint failure (agent_error / user_error).

The agent sees the domain policy in its system prompt and the domain tools (plus, when
given, extra tools such as ToolOrchestra's `call_expert`, an `llm` tool from
orchestra/tools). The user simulator sees tau2's simulation guidelines and the task's
scenario; roles are flipped for it (the agent's messages are its "user" turns) and it never
sees tool calls. Both talk through any object with an async
`chat(messages, tools=None, max_tokens=None, temperature=None)` returning a reply with
`content`, `tool_calls` (OpenAI format), `prompt_tokens`, `completion_tokens`, `cost_usd`
and `latency_s` -- e.g. `orchestra.eval.judge.ChatEndpoint` -- or, for tests and gold
checks, `ScriptedAgent` / `ScriptedUser`. `TicketUser` is the offline user of RL runs without a
simulator endpoint; `engine_agent.EngineAgent` is the policy under training as the agent.

Accounting per episode: the agent's own tokens, dollars and seconds; the user simulator's
separately (it is part of the benchmark, not of the agent's bill); extra tools' cost and
latency (counted into the agent's cost and latency, as ToolOrchestra does).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

from orchestra.envs.domains.base import Domain, StructuredUserInstructions, Task, ToolOutput

FIRST_AGENT_MESSAGE = "Hi! How can I help you today?"
STOP, TRANSFER, OUT_OF_SCOPE = "###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###"
USER_STOP_MARKERS = (STOP, TRANSFER, OUT_OF_SCOPE)

AGENT_INSTRUCTION = """You are a customer service agent that helps the user according to the <policy> provided below.
In each turn you can either:
- Send a message to the user.
- Make a tool call.
You cannot do both at the same time.

Try to be helpful and always follow the policy. Always make sure you generate valid JSON only."""


def agent_system_prompt(policy: str) -> str:
  """The agent's system message: tau2's instruction block, then the domain policy."""
  return f"<instructions>\n{AGENT_INSTRUCTION}\n</instructions>\n<policy>\n{policy}\n</policy>"


def scenario_text(task: Task) -> str:
  """The task's user scenario as the user simulator reads it."""
  scenario = task.user_scenario
  lines = []
  if scenario.persona:
    lines += ["Persona:", "  " + scenario.persona]
  ins = scenario.instructions
  if isinstance(ins, StructuredUserInstructions):
    lines += [f"Domain: {ins.domain}", f"Reason for call:\n  {ins.reason_for_call}"]
    if ins.known_info:
      lines.append(f"Known info:\n  {ins.known_info}")
    if ins.unknown_info:
      lines.append(f"Unknown info:\n  {ins.unknown_info}")
    lines.append(f"Task instructions:\n  {ins.task_instructions}")
  else:
    lines += ["Instructions:", "  " + str(ins)]
  return "\n".join(lines)


def ticket_text(task: Task) -> str:
  """The task as one opening message: `task.ticket` if it has one, else its user scenario."""
  return task.ticket or scenario_text(task)


def load_user_guidelines(data_dir: Path | str) -> str:
  """tau2's text-mode user-simulator guidelines (`user_simulator/simulation_guidelines.md`)."""
  path = Path(data_dir) / "user_simulator" / "simulation_guidelines.md"
  if not path.is_file():
    raise FileNotFoundError(f"user simulator guidelines not found: {path} "
                            "(point --data at the tau2 data folder)")
  return path.read_text()


def user_system_prompt(guidelines: str, task: Task) -> str:
  return f"{guidelines}\n\n<scenario>\n{scenario_text(task)}\n</scenario>"


class ChatModel(Protocol):
  """What the agent and the user simulator talk through (e.g. `ChatEndpoint`)."""

  async def chat(self, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                 max_tokens: int | None = None, temperature: float | None = None) -> Any:
    ...


@dataclasses.dataclass
class Reply:
  """One model turn, reduced to what an episode needs."""

  content: str
  tool_calls: list[dict]          # [{"id", "name", "arguments" (dict or raw str)}]
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cost_usd: float = 0.0
  latency_s: float = 0.0


def reply_from_chat(raw: Any) -> Reply:
  """Converts a ChatReply-like object (OpenAI tool_calls) into a `Reply`."""
  calls = []
  for i, tc in enumerate(getattr(raw, "tool_calls", None) or []):
    fn = tc.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
      try:
        args = json.loads(args) if args.strip() else {}
      except json.JSONDecodeError:
        pass  # kept as the raw string: executing it gives an error observation
    calls.append({"id": tc.get("id") or f"call_{i}", "name": fn.get("name") or "",
                  "arguments": args})
  return Reply(content=getattr(raw, "content", "") or "", tool_calls=calls,
               prompt_tokens=int(getattr(raw, "prompt_tokens", 0) or 0),
               completion_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
               cost_usd=float(getattr(raw, "cost_usd", 0.0) or 0.0),
               latency_s=float(getattr(raw, "latency_s", 0.0) or 0.0))


class LLMAgent:
  """The agent as a chat model with tools: system prompt = tau2 instruction + policy."""

  def __init__(self, model: ChatModel, *, max_tokens: int | None = None,
               temperature: float | None = None):
    self.model, self.max_tokens, self.temperature = model, max_tokens, temperature

  async def respond(self, system: str, history: list[dict], tools: list[dict]) -> Reply:
    raw = await self.model.chat([{"role": "system", "content": system}] + history, tools=tools,
                                max_tokens=self.max_tokens, temperature=self.temperature)
    return reply_from_chat(raw)


class ScriptedAgent:
  """Issues fixed tool calls one per turn, then says `final_message` (tests, gold checks)."""

  def __init__(self, calls: Sequence[Mapping[str, Any]], final_message: str = "Done."):
    self.calls, self.final_message, self._next = list(calls), final_message, 0

  @classmethod
  def from_gold(cls, task: Task, final_message: str = "Done.") -> "ScriptedAgent":
    return cls([{"name": a.name, "arguments": a.arguments} for a in task.gold_actions
                if a.requestor == "assistant"], final_message)

  async def respond(self, system: str, history: list[dict], tools: list[dict]) -> Reply:
    del system, history, tools
    if self._next < len(self.calls):
      call = self.calls[self._next]
      self._next += 1
      return Reply("", [{"id": f"call_{self._next}", "name": call["name"],
                         "arguments": dict(call.get("arguments") or {})}])
    return Reply(self.final_message, [])


class LLMUser:
  """The user simulator: a chat model guided by the guidelines and the task scenario."""

  def __init__(self, model: ChatModel, guidelines: str, *, max_tokens: int | None = None,
               temperature: float | None = None):
    self.model, self.guidelines = model, guidelines
    self.max_tokens, self.temperature = max_tokens, temperature

  async def respond(self, task: Task, conversation: list[dict]) -> Reply:
    """`conversation` is from the agent's side; roles are flipped for the simulator."""
    flipped = [{"role": "user" if m["role"] == "assistant" else "assistant",
                "content": m["content"]} for m in conversation]
    raw = await self.model.chat(
        [{"role": "system", "content": user_system_prompt(self.guidelines, task)}] + flipped,
        max_tokens=self.max_tokens, temperature=self.temperature)
    reply = reply_from_chat(raw)
    reply.tool_calls = []  # airline/retail users have no tools
    return reply


class ScriptedUser:
  """Says fixed lines in order, then ###STOP### (tests)."""

  def __init__(self, lines: Sequence[str] = ()):
    self.lines, self._next = list(lines), 0

  async def respond(self, task: Task, conversation: list[dict]) -> Reply:
    del task, conversation
    if self._next < len(self.lines):
      self._next += 1
      return Reply(self.lines[self._next - 1], [])
    return Reply(STOP, [])


class TicketUser:
  """An offline stand-in for the user simulator, after tau2's solo mode.

  It opens with the task as a ticket (`task.ticket`, else the user scenario's text) and
  ends the conversation (###STOP###) at the agent's first message to it, so the agent
  must act on the ticket alone, then report. Used for teacher demonstrations and for RL
  without a user-simulator endpoint; it never answers questions, so tasks that need a
  dialogue (confirmations, details given on request) become harder, never easier.
  """

  async def respond(self, task: Task, conversation: list[dict]) -> Reply:
    if any(m["role"] == "user" for m in conversation):
      return Reply(STOP, [])
    return Reply(ticket_text(task), [])


@dataclasses.dataclass
class EpisodeResult:
  """One conversational episode.

  Attributes:
    messages: the conversation from the agent's side (OpenAI format, no system message):
      assistant messages (with "tool_calls" when it called tools), "tool" results, and
      "user" messages from the simulator.
    tool_calls: every agent tool call in order: {"name", "arguments", "output", "error"}.
    termination: "user_stop", "agent_stop", "max_steps", "too_many_errors",
      "agent_error" or "user_error".
    steps: the greeting, agent replies, user replies and tool-result batches.
    agent_*: the agent's own usage; expert_*: extra tools (e.g. call_expert); user_*: the
      simulator's. cost_usd / latency_s = the agent's cost / latency including extra tools.
    final_db_hash: the environment's hash at the end.
  """

  task_id: str
  trial: int
  messages: list[dict]
  tool_calls: list[dict]
  termination: str
  steps: int
  error: Optional[str] = None
  agent_prompt_tokens: int = 0
  agent_completion_tokens: int = 0
  agent_cost_usd: float = 0.0
  agent_latency_s: float = 0.0
  expert_cost_usd: float = 0.0
  expert_latency_s: float = 0.0
  tool_latency_s: float = 0.0
  user_cost_usd: float = 0.0
  user_latency_s: float = 0.0
  wall_s: float = 0.0
  final_db_hash: str = ""

  @property
  def cost_usd(self) -> float:
    return self.agent_cost_usd + self.expert_cost_usd

  @property
  def latency_s(self) -> float:
    return self.agent_latency_s + self.expert_latency_s + self.tool_latency_s

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["cost_usd"], out["latency_s"] = self.cost_usd, self.latency_s
    return out


def _user_stopped(text: str) -> bool:
  return any(marker in text for marker in USER_STOP_MARKERS)


def _tool_calls_message(reply) -> dict:
  """The assistant message of a reply with tool calls, arguments as JSON strings."""
  return {"role": "assistant", "content": reply.content or None,
          "tool_calls": [{"id": c["id"], "type": "function", "function": {
              "name": c["name"],
              "arguments": c["arguments"] if isinstance(c["arguments"], str)
              else json.dumps(c["arguments"])}} for c in reply.tool_calls]}


async def _run_call(call: dict, env, extras: dict, res: EpisodeResult) -> None:
  """Runs one tool call on an extra tool or the domain env and appends its record (with
  whether it failed) and its tool message to `res`."""
  name, args = call["name"], call["arguments"]
  t0 = time.perf_counter()
  if name in extras:
    result = await extras[name](args)
    text, failed = result.text, result.error is not None
    res.expert_cost_usd += result.cost_usd
    res.expert_latency_s += result.latency_s
  else:
    out = (env.execute(name, args) if isinstance(args, Mapping) else
           ToolOutput(f"Error: tool arguments are not a JSON object: {args!r}", True))
    text, failed = out.text, out.error
    res.tool_latency_s += time.perf_counter() - t0
  res.tool_calls.append({"name": name, "arguments": args, "output": text, "error": failed})
  res.messages.append({"role": "tool", "tool_call_id": call["id"], "name": name,
                       "content": text})


async def run_conversation(domain: Domain, task: Task, agent: Any, user: Any, *,
                           extra_tools: Sequence[Any] = (), max_steps: int = 100,
                           max_errors: int = 10, trial: int = 0,
                           system_prompt: Optional[str] = None) -> EpisodeResult:
  """Runs one episode of `task` on a fresh environment; never raises on model failures.

  Args:
    domain, task: what to run (the env gets the task's initial state).
    agent: `LLMAgent`, `ScriptedAgent` or anything with the same `respond`.
    user: `LLMUser`, `ScriptedUser` or anything with the same `respond`.
    extra_tools: orchestra `Tool`s offered next to the domain tools (e.g. call_expert);
      their names must not clash with domain tools.
    max_steps: steps allowed before the episode is cut (tau2's max_steps; see above).
    max_errors: failed tool calls allowed (tau2's max_errors).
    trial: recorded in the result.
    system_prompt: the agent's system message (default: tau2's instruction and the
      domain policy, `agent_system_prompt`).
  """
  env = domain.new_env(task)
  extras = {t.name: t for t in extra_tools}
  clash = sorted(set(extras) & set(env.tool_names()))
  if clash:
    raise ValueError(f"extra tools {clash} clash with {domain.name} domain tool names")
  tools = domain.tool_schemas() + [t.schema() for t in extra_tools]
  system = system_prompt if system_prompt is not None else agent_system_prompt(domain.policy)
  res = EpisodeResult(task.id, trial, [{"role": "assistant", "content": FIRST_AGENT_MESSAGE}],
                      [], "", 1)
  start = time.perf_counter()
  ended = None
  while ended is None:
    ended = await _user_turn(user, task, res, max_steps)
    if ended is None:
      ended = await _agent_turns(agent, system, tools, env, extras, res, max_steps, max_errors)
  res.termination, res.error = ended
  res.final_db_hash = env.db_hash()
  res.wall_s = time.perf_counter() - start
  return res


async def _user_turn(user, task: Task, res: EpisodeResult, max_steps: int
                     ) -> tuple[str, Optional[str]] | None:
  """The user's next message, appended to `res.messages`; (termination, error) when the
  episode ends with it, else None."""
  try:
    reply = await user.respond(task, [m for m in res.messages
                                      if m["role"] in ("user", "assistant") and m.get("content")])
  except Exception as e:  # noqa: BLE001 - an endpoint failure ends the episode, recorded
    return "user_error", f"{type(e).__name__}: {e}"
  res.user_cost_usd += reply.cost_usd
  res.user_latency_s += reply.latency_s
  res.messages.append({"role": "user", "content": reply.content})
  res.steps += 1
  if _user_stopped(reply.content):
    return "user_stop", None
  return ("max_steps", None) if res.steps >= max_steps else None


async def _agent_turns(agent, system: str, tools: list, env, extras: dict, res: EpisodeResult,
                       max_steps: int, max_errors: int) -> tuple[str, Optional[str]] | None:
  """The agent's replies, and their tool calls run, until it writes to the user (None) or
  the episode ends ((termination, error)). Failed calls count over the whole episode."""
  while True:
    try:
      reply = await agent.respond(system, res.messages, tools)
    except Exception as e:  # noqa: BLE001
      return "agent_error", f"{type(e).__name__}: {e}"
    res.agent_prompt_tokens += reply.prompt_tokens
    res.agent_completion_tokens += reply.completion_tokens
    res.agent_cost_usd += reply.cost_usd
    res.agent_latency_s += reply.latency_s
    res.steps += 1
    if not reply.tool_calls:
      res.messages.append({"role": "assistant", "content": reply.content})
      if STOP in reply.content:
        return "agent_stop", None
      return ("max_steps", None) if res.steps >= max_steps else None
    res.messages.append(_tool_calls_message(reply))
    if res.steps >= max_steps:  # the cut comes before the calls run, as in tau2
      return "max_steps", None
    for call in reply.tool_calls:
      await _run_call(call, env, extras, res)
    res.steps += 1  # the results of one reply's calls come back as one step
    if sum(c["error"] for c in res.tool_calls) > max_errors:
      return "too_many_errors", None
    if res.steps >= max_steps:
      return "max_steps", None
