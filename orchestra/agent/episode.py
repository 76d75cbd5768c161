"""One multi-turn episode: generate -> parse -> run tools -> append observation -> ...

The sequence is built as tokens and only ever appended to: the prompt is
rendered once, each policy turn is the engine's own tokens (ending in
`<|im_end|>`), and each observation is tokenised on its own and appended.
Earlier turns are never re-tokenised, so the behaviour log-probs stay aligned
with the tokens the learner scores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any

from orchestra.agent.chat_format import IM_END, observation_text, render_prompt, tool_call_text
from orchestra.agent.parser import parse_turn
from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.tools.base import Tool, ToolResult


@dataclasses.dataclass
class Turn:
  """One policy turn and what its tool calls returned."""
  text: str                                   # the policy's decoded turn
  calls: list[dict[str, Any]]                 # [{"name", "arguments"}] that were run
  observation: str                            # what the policy saw next ("" after answer)
  cost_usd: float                             # tools' cost + the orchestrator's own tokens
  latency_s: float                            # generation wall time + slowest tool
  format_errors: list[str]
  weight_version: int
  finish_reason: str                          # the engine's: "stop" | "length"


# Finish reasons that are our failure, not the policy's ("max_turns"/"max_tokens" are its own).
LOST_FINISH_REASONS = ("engine_error", "user_error")


@dataclasses.dataclass
class Trajectory:
  token_ids: list[int]
  loss_mask: list[int]                        # 1 on tokens the policy generated
  behaviour_logprobs: list[float]             # sampler log-probs on policy tokens, 0 elsewhere
  prompt_length: int
  turns: list[Turn]
  tool_calls: dict[str, int]                  # calls per tool name
  cost_usd: float
  latency_s: float
  answer: str | None
  # "answer" | "max_turns" | "max_tokens" | "engine_error"; a tau2 conversation's termination
  # ("user_stop", "agent_stop", "max_steps", ...) for domain episodes (EngineAgent)
  finish_reason: str
  error: str | None = None                    # why an episode failed (engine errors)

  @classmethod
  def from_prompt(cls, prompt_ids: list[int], finish_reason: str = "") -> "Trajectory":
    """A trajectory holding only its prompt (no policy tokens, no turns yet)."""
    n = len(prompt_ids)
    return cls(token_ids=list(prompt_ids), loss_mask=[0] * n, behaviour_logprobs=[0.0] * n,
               prompt_length=n, turns=[], tool_calls={}, cost_usd=0.0, latency_s=0.0,
               answer=None, finish_reason=finish_reason)

  @property
  def lost(self) -> bool:
    """Lost to our infrastructure (the engine or a simulated user failed), not the policy:
    such an episode says nothing about the policy and is left out of training."""
    return self.finish_reason in LOST_FINISH_REASONS

  @property
  def format_ok(self) -> bool:
    return all(not t.format_errors for t in self.turns)

  @property
  def weight_versions(self) -> list[int]:
    return [t.weight_version for t in self.turns]


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
  max_turns: int = 8
  max_total_tokens: int = 2048                # prompt + every turn + every observation
  max_observation_tokens: int = 512           # longer observations are cut (with a note)
  tool_timeout_s: float = 120.0               # a tool call slower than this becomes an error
  generation_timeout_s: float = 600.0         # a turn's generation slower than this fails the episode
  price_in_per_1m: float = 0.0                # the orchestrator's own tokens, USD per 1M
  price_out_per_1m: float = 0.0
  # Declared latency of the orchestrator's own turns, seconds per generated token; None
  # measures wall clock instead. Declaring it keeps rewards reproducible where wall clock
  # is noise (a shared CPU, requests queued behind a batch), like a simulated tool's latency.
  generation_latency_per_token_s: float | None = None

  def __post_init__(self):
    problems = [f"{name}={getattr(self, name)} must be >= 1" for name in
                ("max_turns", "max_total_tokens", "max_observation_tokens")
                if getattr(self, name) < 1]
    problems += [f"{name}={getattr(self, name)} must be > 0" for name in
                 ("tool_timeout_s", "generation_timeout_s") if not getattr(self, name) > 0]
    problems += [f"{name}={getattr(self, name)} must be >= 0" for name in
                 ("price_in_per_1m", "price_out_per_1m") if getattr(self, name) < 0]
    latency = self.generation_latency_per_token_s
    if latency is not None and latency < 0:
      problems.append(f"generation_latency_per_token_s={latency} must be >= 0 (or None: "
                      "measured)")
    if problems:
      raise ValueError("; ".join(problems))


async def run_episode(engine, tokenizer, tools: dict[str, Tool], messages: list[dict[str, Any]],
                      sampling: SamplingParams, config: EpisodeConfig = EpisodeConfig()
                      ) -> Trajectory:
  """Runs the policy on `messages` (system + user) with `tools` until `answer` or a limit."""
  schemas = [tool.schema() for tool in tools.values()]
  traj = Trajectory.from_prompt(encode(tokenizer, prompt_text(tokenizer, messages, schemas)),
                                finish_reason="max_turns")
  for _ in range(config.max_turns):
    if len(traj.token_ids) >= config.max_total_tokens:
      traj.finish_reason = "max_tokens"
      break
    try:
      turn, _ = await generate_turn(engine, tokenizer, traj, sampling, config)
    except (EngineError, OSError, asyncio.TimeoutError):
      break
    parsed = parse_turn(turn.text, tools.keys())
    results = await asyncio.gather(*(_call_tool(tools[c.name], c.arguments, config.tool_timeout_s)
                                     for c in parsed.calls))
    turn.calls = [dataclasses.asdict(c) for c in parsed.calls]
    turn.cost_usd += sum(r.cost_usd for r in results)
    turn.latency_s += max((r.latency_s for r in results), default=0.0)
    turn.format_errors = list(parsed.errors) + turn.format_errors
    traj.cost_usd += turn.cost_usd
    traj.latency_s += turn.latency_s
    for c in parsed.calls:
      traj.tool_calls[c.name] = traj.tool_calls.get(c.name, 0) + 1
    final = next((r for r in results if r.final), None)
    if final is not None:
      traj.answer, traj.finish_reason = final.usage.get("answer"), "answer"
      break
    turn.observation = _observation(parsed.calls, results, parsed.errors)
    obs_ids = encode(tokenizer, observation_text(
        truncate_tokens(tokenizer, turn.observation, config.max_observation_tokens)))
    append_tokens(traj, obs_ids, [0.0] * len(obs_ids), policy=False)
  return traj


def prompt_text(tokenizer, messages: list[dict[str, Any]], schemas: list[dict]) -> str:
  """The episode's opening prompt as the tokenizer's own chat template renders it
  (`apply_chat_template`, generation prompt added); `render_prompt`, the same Qwen3 format,
  for a tokenizer without one."""
  if getattr(tokenizer, "chat_template", None):
    return tokenizer.apply_chat_template(messages, tools=schemas, add_generation_prompt=True,
                                         tokenize=False)
  return render_prompt(messages, schemas)


async def generate_turn(engine, tokenizer, traj: Trajectory, sampling: SamplingParams,
                        config: EpisodeConfig) -> tuple[Turn, Completion]:
  """Generates one policy turn onto `traj` and records it in `traj.turns`.

  The turn is capped by the token budget left and stops at `<|im_end|>` or at one of the
  model's own stop ids in `sampling.stop_token_ids`; a turn that ends any other way (cut
  off, or a stop id other than `<|im_end|>`) is closed with an unmasked `<|im_end|>`.
  Its cost is the orchestrator's own: (prompt tokens * price_in + generated tokens *
  price_out) / 1e6; its latency the declared per-token latency, or wall clock. An engine
  failure or timeout sets `finish_reason = "engine_error"` and the reason, then propagates.

  With `sampling.seed` set, the turn samples with `turn_seed(seed, turn index)`: every
  turn of an episode draws its own noise (the engine folds the token index into the
  seed from 0 on each request, so one seed reused per turn would repeat the same draws).
  """
  im_end = tokenizer.convert_tokens_to_ids(IM_END)
  budget = config.max_total_tokens - len(traj.token_ids)
  stops = tuple(dict.fromkeys((im_end, *sampling.stop_token_ids)))
  turn_sampling = dataclasses.replace(sampling, max_tokens=min(sampling.max_tokens, budget),
                                      stop_token_ids=stops,
                                      seed=turn_seed(sampling.seed, len(traj.turns)))
  prompt_tokens = len(traj.token_ids)
  start = time.perf_counter()
  try:
    completion = await asyncio.wait_for(engine.generate(list(traj.token_ids), turn_sampling),
                                        config.generation_timeout_s)
  except (EngineError, OSError, asyncio.TimeoutError) as e:
    traj.finish_reason, traj.error = "engine_error", f"{type(e).__name__}: {e}"
    raise
  latency = time.perf_counter() - start
  if config.generation_latency_per_token_s is not None:
    latency = len(completion.token_ids) * config.generation_latency_per_token_s
  append_tokens(traj, completion.token_ids, completion.logprobs, policy=True)
  text = tokenizer.decode(completion.token_ids, skip_special_tokens=False)
  if text.endswith(IM_END):
    text = text[:-len(IM_END)]
  else:                          # cut off, or the model's own eos: close the turn ourselves
    if completion.token_ids and completion.token_ids[-1] in stops:
      text = text[:-len(tokenizer.decode(completion.token_ids[-1:], skip_special_tokens=False))]
    append_tokens(traj, [im_end], [0.0], policy=False)
  cost = (prompt_tokens * config.price_in_per_1m
          + len(completion.token_ids) * config.price_out_per_1m) / 1e6
  turn = Turn(text=text, calls=[], observation="", cost_usd=cost, latency_s=latency,
              format_errors=[], weight_version=completion.weight_version,
              finish_reason=completion.finish_reason)
  if completion.finish_reason == "length":
    turn.format_errors.append("turn cut off at the token limit")
  traj.turns.append(turn)
  return turn, completion


def turn_seed(seed: int | None, turn: int) -> int | None:
  """The sampling seed of turn `turn` of the episode seeded `seed` (None stays None).

  A hash of (seed, turn), 31 bits (what every engine, vLLM included, accepts): distinct
  across an episode's turns and reproducible from the episode's seed.
  """
  if seed is None:
    return None
  digest = hashlib.blake2b(f"{seed}:{turn}".encode(), digest_size=4).digest()
  return int.from_bytes(digest, "little") >> 1


async def _call_tool(tool: Tool, arguments, timeout_s: float) -> ToolResult:
  try:
    return await asyncio.wait_for(tool(arguments), timeout_s)
  except asyncio.TimeoutError:
    return ToolResult(text=f"Error: {tool.name} timed out after {timeout_s:g} s",
                      error="timeout", latency_s=timeout_s)


async def run_episodes(engine, tokenizer, tools: dict[str, Tool],
                       conversations: list[list[dict[str, Any]]], sampling: SamplingParams,
                       config: EpisodeConfig = EpisodeConfig(), max_concurrent: int = 64,
                       seed: int | None = None) -> list[Trajectory]:
  """Runs one episode per conversation, at most `max_concurrent` at a time, in order.

  With `seed`, episode i samples with seed `seed + i` (reproducible rollouts).
  """
  gate = asyncio.Semaphore(max_concurrent)

  async def one(i, messages):
    episode_sampling = sampling if seed is None else dataclasses.replace(sampling, seed=seed + i)
    async with gate:
      return await run_episode(engine, tokenizer, tools, messages, episode_sampling, config)

  return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(conversations))))


def scripted_completion(tokenizer, name: str, arguments: dict[str, Any],
                        weight_version: int = -1) -> Completion:
  """A policy turn that calls `name(arguments)`, as an engine would return it (log-probs 0).

  Scripted policies (teacher demonstrations, evaluation baselines) use it to
  go through the same episode loop as the model.
  """
  return text_completion(tokenizer, tool_call_text(name, arguments), weight_version)


def text_completion(tokenizer, text: str, weight_version: int = -1) -> Completion:
  """A policy turn that writes `text` (then `<|im_end|>`), as an engine would return it."""
  ids = encode(tokenizer, text + IM_END)
  return Completion(ids, [0.0] * len(ids), "stop", weight_version)


class ScriptedEngine:
  """Replays fixed turns as the policy's completions, so demonstrations and baselines go
  through the real episode loop. A turn is `(tool name, arguments)` or plain text."""

  weight_version = -1

  def __init__(self, tokenizer, turns):
    self.tokenizer, self.turns = tokenizer, list(turns)

  async def generate(self, prompt_ids, sampling):
    del prompt_ids, sampling
    if not self.turns:
      raise EngineError("the scripted turns are used up")
    turn = self.turns.pop(0)
    if isinstance(turn, str):
      return text_completion(self.tokenizer, turn, self.weight_version)
    return scripted_completion(self.tokenizer, *turn, self.weight_version)


def encode(tokenizer, text: str) -> list[int]:
  return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def append_tokens(traj: Trajectory, ids, logprobs, *, policy: bool):
  traj.token_ids.extend(int(t) for t in ids)
  traj.loss_mask.extend([int(policy)] * len(ids))
  traj.behaviour_logprobs.extend(float(x) for x in logprobs)


def _observation(calls, results: list[ToolResult], errors: list[str]) -> str:
  parts = [f"[{c.name}] {r.text}" if len(calls) > 1 else r.text
           for c, r in zip(calls, results, strict=True)]
  if errors:
    parts.append("Format error: " + "; ".join(errors))
  return "\n\n".join(parts)


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
  ids = encode(tokenizer, text)
  if len(ids) <= max_tokens:
    return text
  return tokenizer.decode(ids[:max_tokens]) + f"\n[... cut {len(ids) - max_tokens} tokens]"
