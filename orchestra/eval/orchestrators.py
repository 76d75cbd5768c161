"""The orchestrators a QA run can evaluate, each answering one item's messages with an Outcome.

Three kinds (`OrchestratorSpec.kind`):

  checkpoint  one of our policies served by vLLM or `launch/serve.py`: token-id completions
              through `HTTPEngine` and the training episode loop (`run_episode`), so the
              prompt, tool-call format and accounting are the ones the policy was trained on.
  chat        any OpenAI-compatible chat model used as a prompted orchestrator (the paper's
              "GPT-5 + tools" rows): chat completions with `tools`; the model's tool calls
              are run and returned as `tool` messages until it calls `answer` (or replies
              without a tool call, whose text is then its answer).
  no_tools    the same chat model answering directly in one call.

Accounting per item (the paper's rules; its public HLE/FRAMES code never computed them):
    cost_usd  = orchestrator tokens at its own price + the sum of every tool's cost_usd
    latency_s = sum over turns of (generation wall time + the slowest tool call of the turn)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import Any

from orchestra.eval.endpoints import endpoint_from_spec, setting_names
from orchestra.eval.judge import ChatEndpoint, ChatError, JudgeConfigError
from orchestra.eval.qa_settings import (ORCHESTRATORS, BenchmarkError, JudgeSpec,
                                        OrchestratorSpec, RunSettings)
from orchestra.tools.base import Tool, ToolResult

TRANSCRIPT_CHARS = 2000                 # each text kept in a record's transcript


@dataclasses.dataclass
class Outcome:
  """What an orchestrator did on one item."""
  answer: str | None                       # the submitted answer (chat: the final text)
  # answer | content (a chat reply without a tool call) | max_turns | max_tokens | empty |
  # engine_error
  finish_reason: str
  turns: int = 0
  tool_calls: dict[str, int] = dataclasses.field(default_factory=dict)
  cost_usd: float = 0.0
  latency_s: float = 0.0
  format_errors: int = 0
  error: str | None = None                 # endpoint failure (the item is retried on resume)
  transcript: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def cut(text: str | None, limit: int = TRANSCRIPT_CHARS) -> str:
  """`text` shortened to `limit` characters, saying how many were cut."""
  text = text or ""
  return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} chars]"


class CheckpointOrchestrator:
  """Our policy behind an HTTP engine, run with the training episode loop."""

  def __init__(self, engine, tokenizer, tools: dict[str, Tool], spec: OrchestratorSpec,
               settings: RunSettings):
    from orchestra.agent.episode import EpisodeConfig
    from orchestra.engines.base import SamplingParams
    self.engine, self.tokenizer, self.tools = engine, tokenizer, tools
    self.sampling = SamplingParams(
        max_tokens=spec.max_tokens, temperature=1.0 if spec.temperature is None
        else spec.temperature)
    self.episode = EpisodeConfig(
        max_turns=settings.max_turns, max_total_tokens=settings.max_total_tokens,
        max_observation_tokens=settings.max_observation_tokens,
        tool_timeout_s=settings.tool_timeout_s, price_in_per_1m=spec.price_in_per_1m,
        price_out_per_1m=spec.price_out_per_1m)
    self.models_url = engine.base_urls[0] + "/v1/models"

  async def solve(self, messages: list[dict[str, Any]], seed: int) -> Outcome:
    from orchestra.agent.episode import run_episode
    traj = await run_episode(self.engine, self.tokenizer, self.tools, messages,
                             dataclasses.replace(self.sampling, seed=seed), self.episode)
    transcript = [{"text": cut(t.text), "calls": t.calls, "observation": cut(t.observation),
                   "format_errors": t.format_errors} for t in traj.turns]
    return Outcome(answer=traj.answer, finish_reason=traj.finish_reason, turns=len(traj.turns),
                   tool_calls=dict(traj.tool_calls), cost_usd=traj.cost_usd,
                   latency_s=traj.latency_s,
                   format_errors=sum(len(t.format_errors) for t in traj.turns),
                   error=traj.error if traj.finish_reason == "engine_error" else None,
                   transcript=transcript)

  async def aclose(self) -> None:
    await self.engine.aclose()


class ChatOrchestrator:
  """An OpenAI-compatible chat model calling `tools` (none: it answers in one call)."""

  def __init__(self, endpoint: ChatEndpoint, tools: dict[str, Tool], spec: OrchestratorSpec,
               settings: RunSettings):
    self.endpoint, self.tools = endpoint, tools
    self.max_tokens, self.temperature = spec.max_tokens, spec.temperature
    self.settings = settings
    self.max_turns = settings.max_turns if tools else 1
    self.models_url = endpoint.base_url + "/models"

  async def solve(self, messages: list[dict[str, Any]], seed: int) -> Outcome:
    messages = list(messages)
    schemas = [tool.schema() for tool in self.tools.values()] or None
    out = Outcome(answer=None, finish_reason="max_turns")
    for turn in range(self.max_turns):
      try:
        reply = await self.endpoint.chat(messages, tools=schemas, max_tokens=self.max_tokens,
                                         temperature=self.temperature, seed=seed)
      except ChatError as e:
        out.finish_reason, out.error = "engine_error", str(e)
        break
      out.turns += 1
      out.cost_usd += reply.cost_usd
      if not reply.tool_calls:
        out.latency_s += reply.latency_s
        out.transcript.append({"text": cut(reply.content), "calls": [], "observation": ""})
        out.answer = reply.content.strip() or None
        out.finish_reason = ("content" if self.tools else "answer") if out.answer else "empty"
        break
      calls, results = await self._run_calls(reply.tool_calls, turn)
      out.latency_s += reply.latency_s + max((r.latency_s for r in results), default=0.0)
      out.cost_usd += sum(r.cost_usd for r in results)
      messages.append({"role": "assistant", "content": reply.content or None,
                       "tool_calls": [c["raw"] for c in calls]})
      for call, result in zip(calls, results, strict=True):
        if call["error"]:
          out.format_errors += 1
        else:
          out.tool_calls[call["name"]] = out.tool_calls.get(call["name"], 0) + 1
        messages.append({"role": "tool", "tool_call_id": call["raw"]["id"],
                         "content": cut(result.text, self.settings.max_observation_chars)})
      out.transcript.append({
          "text": cut(reply.content),
          "calls": [{"name": c["name"], "arguments": c["arguments"]} for c in calls],
          "observation": cut("\n\n".join(r.text for r in results))})
      final = next((c for c, r in zip(calls, results, strict=True) if r.final), None)
      if final is not None:
        out.answer, out.finish_reason = str(final["arguments"].get("answer", "")), "answer"
        break
    return out

  async def _run_calls(self, tool_calls: list[dict[str, Any]], turn: int
                       ) -> tuple[list[dict[str, Any]], list[ToolResult]]:
    """Parses each OpenAI tool call and runs the valid ones concurrently (one per tool name)."""
    calls, jobs, seen = [], [], set()
    for i, raw in enumerate(tool_calls):
      raw = raw if isinstance(raw, dict) else {}
      fn = raw.get("function") or {}
      name, args = fn.get("name"), fn.get("arguments", {})
      clean = {"id": raw.get("id") or f"call_{turn}_{i}", "type": "function",
               "function": {"name": str(name), "arguments": args if isinstance(args, str)
                            else json.dumps(args)}}
      error = None
      if isinstance(args, str):
        try:
          args = json.loads(args or "{}")
        except json.JSONDecodeError as e:
          error = f"arguments of {name!r} are not valid JSON ({e.msg})"
      if error is None and name not in self.tools:
        error = f"unknown tool {name!r}; available: {sorted(self.tools)}"
      elif error is None and name in seen:
        error = f"{name!r} called twice in one turn; only the first call is run"
      seen.add(name)
      call = {"name": str(name), "arguments": args if isinstance(args, dict) else {},
              "raw": clean, "error": error}
      calls.append(call)
      jobs.append(self._call(call))
    return calls, list(await asyncio.gather(*jobs))

  async def _call(self, call: dict[str, Any]) -> ToolResult:
    if call["error"]:
      return ToolResult(text=f"Error: {call['error']}", error=call["error"])
    tool = self.tools[call["name"]]
    try:
      return await asyncio.wait_for(tool(call["arguments"]), self.settings.tool_timeout_s)
    except asyncio.TimeoutError:
      return ToolResult(text=f"Error: {tool.name} timed out after "
                        f"{self.settings.tool_timeout_s:g} s", error="timeout",
                        latency_s=self.settings.tool_timeout_s)

  async def aclose(self) -> None:
    await self.endpoint.aclose()


def chat_endpoint(spec: OrchestratorSpec | JudgeSpec, prefix: str = "") -> ChatEndpoint:
  """The endpoint of a spec whose flags are `--<prefix>base_url`, ... (validated, nothing is
  sent); a bad setting is a BenchmarkError naming its flag."""
  try:
    return endpoint_from_spec(spec, setting_names("--" + prefix, url="base_url"))
  except JudgeConfigError as e:
    raise BenchmarkError(str(e)) from None


def build_orchestrator(spec: OrchestratorSpec, tools: dict[str, Tool], settings: RunSettings):
  """The orchestrator `spec` describes; validates it without contacting the endpoint."""
  if spec.kind not in ORCHESTRATORS:
    raise BenchmarkError(f"--orchestrator={spec.kind!r}: expected one of {list(ORCHESTRATORS)}")
  if not spec.base_url or not spec.model:
    raise BenchmarkError(f"--orchestrator={spec.kind} needs --base_url and --model")
  if spec.max_tokens < 1:
    raise BenchmarkError(f"--max_tokens={spec.max_tokens} must be >= 1")
  if spec.kind != "checkpoint":
    endpoint = chat_endpoint(spec)
    return ChatOrchestrator(endpoint, {} if spec.kind == "no_tools" else tools, spec, settings)
  if not spec.tokenizer_dir:
    raise BenchmarkError("--orchestrator=checkpoint needs --tokenizer, the policy's tokenizer "
                         "folder (e.g. the model_dir given to launch/serve.py or vllm)")
  tokenizer = load_policy_tokenizer(spec.tokenizer_dir)
  from orchestra.engines.http_engine import HTTPEngine
  root = spec.base_url.rstrip("/").removesuffix("/v1")
  try:
    engine = HTTPEngine([root], spec.model, api_key_env=spec.api_key_env)
  except ValueError as e:
    raise BenchmarkError(f"orchestrator endpoint: {e}") from None
  return CheckpointOrchestrator(engine, tokenizer, tools, spec, settings)


def load_policy_tokenizer(path: str):
  """A local HF tokenizer that has the chat tokens `run_episode` needs."""
  from orchestra.agent.chat_format import IM_END
  from orchestra.agent.tokenizer import load_tokenizer
  if not os.path.isdir(path):
    raise BenchmarkError(f"--tokenizer={path}: no such folder")
  try:
    tokenizer = load_tokenizer(path)
  except (OSError, ValueError) as e:
    raise BenchmarkError(f"--tokenizer={path}: cannot load a tokenizer ({e})") from None
  token_id = tokenizer.convert_tokens_to_ids(IM_END)
  if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != IM_END:
    raise BenchmarkError(f"--tokenizer={path}: has no {IM_END} token; checkpoint orchestrators "
                         "use the Qwen-style chat format")
  return tokenizer


async def check_reachable(url: str, api_key_env: str | None = None, timeout_s: float = 10.0
                          ) -> None:
  """BenchmarkError unless `url` answers (any HTTP status counts as reachable)."""
  import httpx
  headers = {}
  if api_key_env and os.environ.get(api_key_env):
    headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
  try:
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as client:
      await client.get(url)
  except httpx.HTTPError as e:
    raise BenchmarkError(f"orchestrator endpoint {url} is unreachable ({type(e).__name__}); "
                         "start the server (launch/serve.py or vllm serve) or fix --base_url"
                         ) from None

