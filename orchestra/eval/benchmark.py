"""Runs an orchestrator over a QA benchmark, item by item, resumably; grades and records each.

Three kinds of orchestrator (`OrchestratorSpec.kind`):

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

Resume: every finished item is appended to OUT_DIR/results.jsonl as one line, written with
a single `write` and fsync'ed, so a crash loses at most the items in flight; a torn last
line is dropped on the next start. Items whose id already has a `done` record are skipped;
items that failed on an endpoint error (`status: error`) are run again. OUT_DIR/run.json
pins the setup (benchmark, data file hash, orchestrator, tools, grader): resuming into a
folder of another setup is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from orchestra.envs.qa import CHOICE, NUMERIC, QAItem
from orchestra.eval.graders import grade
from orchestra.eval.judge import ChatEndpoint, ChatError, Judge, JudgeConfigError, Verdict
from orchestra.tools.base import Tool, ToolConfigError, ToolResult, build_tool

ORCHESTRATORS = ("checkpoint", "chat", "no_tools")
SIMPLE_TOOLS = ("local_search", "code_interpreter", "web_search")
RESULTS_FILE, RUN_FILE = "results.jsonl", "run.json"
SYSTEM_PROMPT = "You are good at using tools."
TOOLS_INSTRUCTION = ("Use the tools to gather what you need, then call `answer` with the final "
                     "answer.")
NO_TOOLS_INSTRUCTION = "Think it through, then end your reply with a line 'Answer: <final answer>'."
ANSWER_HINTS = {CHOICE: "The final answer is the letter of the correct choice.",
                NUMERIC: "The final answer is a single number."}
DEFAULT_ANSWER_HINT = "The final answer is short: a name, a number or a few words."
TRANSCRIPT_CHARS = 2000                 # each text kept in a record's transcript


class BenchmarkError(ValueError):
  """A setting, file or endpoint problem a user can fix; the message names it and the fix."""


# ----------------------------------------------------------------------------- tools


def load_tool_config(path: str) -> list[dict[str, Any]]:
  """Tool specs from a JSON file: `{"tools": [spec, ...]}` or a bare list of specs.

  A spec is what `orchestra.tools.build_tool` takes, e.g.
  {"type": "local_search", "index_dir": "indexes/wiki"} or {"type": "llm", "name": "expert-1",
  "model": "gpt-5-mini", "base_url": "https://api.openai.com/v1", "api_key_env":
  "OPENAI_API_KEY", "price_in_per_1m": 0.25, "price_out_per_1m": 2.0}.
  """
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except FileNotFoundError:
    raise BenchmarkError(f"tool config {path}: no such file") from None
  except json.JSONDecodeError as e:
    raise BenchmarkError(f"tool config {path}, line {e.lineno}: invalid JSON ({e.msg})") from None
  specs = config.get("tools") if isinstance(config, dict) else config
  if not isinstance(specs, list):
    raise BenchmarkError(f"tool config {path}: expected {{\"tools\": [...]}} or a list of tool "
                         "specs")
  for i, spec in enumerate(specs):
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
      raise BenchmarkError(f"tool config {path}: tools[{i}] must be an object with a \"type\"")
  return specs


def simple_tool_specs(names: Sequence[str], index_dir: str | None = None) -> list[dict[str, Any]]:
  """Specs of tools named on the command line (SIMPLE_TOOLS) with their default options."""
  specs = []
  for name in names:
    if name not in SIMPLE_TOOLS:
      raise BenchmarkError(f"--tools: unknown tool {name!r}; expected some of {list(SIMPLE_TOOLS)}"
                           " (use --tool_config for llm experts and custom options)")
    if name == "local_search":
      if not index_dir:
        raise BenchmarkError("--tools=local_search needs --index_dir (build one with "
                             "launch/build_index.py)")
      specs.append({"type": "local_search", "index_dir": index_dir})
    else:
      specs.append({"type": name})
  return specs


def build_tools(specs: Sequence[dict[str, Any]], with_answer: bool = True) -> dict[str, Tool]:
  """name -> Tool for every spec, plus `answer`; BenchmarkError naming the bad entry."""
  import orchestra.tools  # noqa: F401 - registers every tool type
  tools: dict[str, Tool] = {}
  for i, spec in enumerate(specs):
    try:
      tool = build_tool(spec)
    except ToolConfigError as e:
      raise BenchmarkError(f"tools[{i}] ({spec.get('type')}): {e}") from None
    if tool.name in tools or tool.name == "answer":
      raise BenchmarkError(f"tools[{i}]: a second tool named {tool.name!r}; give it a "
                           "different \"name\"")
    tools[tool.name] = tool
  if with_answer:
    tools["answer"] = build_tool({"type": "answer"})
  return tools


# ----------------------------------------------------------------------------- orchestrators


@dataclasses.dataclass(frozen=True)
class OrchestratorSpec:
  """Who orchestrates and at what price.

  base_url: "http://host:8000/v1" (for `checkpoint` the /v1 may be left out).
  tokenizer_dir: the policy's tokenizer (HF folder) for `checkpoint`, e.g. its model_dir.
  price_in_per_1m, price_out_per_1m: the orchestrator's own tokens, USD per 1M.
  """
  kind: str
  base_url: str
  model: str
  api_key_env: str | None = None
  tokenizer_dir: str | None = None
  price_in_per_1m: float = 0.0
  price_out_per_1m: float = 0.0
  max_tokens: int = 2048                   # per turn
  temperature: float | None = None         # None: 1.0 for checkpoints, the endpoint's default else
  label: str = ""

  def default_label(self) -> str:
    if self.label:
      return self.label
    return f"{self.model} (no tools)" if self.kind == "no_tools" else f"{self.model} + tools"


@dataclasses.dataclass(frozen=True)
class RunSettings:
  max_turns: int = 30
  max_total_tokens: int = 32_768           # checkpoint: prompt + all turns + observations
  max_observation_tokens: int = 2048       # checkpoint: longer tool outputs are cut
  max_observation_chars: int = 12_000      # chat: longer tool outputs are cut
  tool_timeout_s: float = 120.0
  concurrency: int = 8
  seed: int = 0
  system_prompt: str = SYSTEM_PROMPT


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


def _cut(text: str | None, limit: int = TRANSCRIPT_CHARS) -> str:
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
    transcript = [{"text": _cut(t.text), "calls": t.calls, "observation": _cut(t.observation),
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
        out.transcript.append({"text": _cut(reply.content), "calls": [], "observation": ""})
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
                         "content": _cut(result.text, self.settings.max_observation_chars)})
      out.transcript.append({
          "text": _cut(reply.content),
          "calls": [{"name": c["name"], "arguments": c["arguments"]} for c in calls],
          "observation": _cut("\n\n".join(r.text for r in results))})
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


def chat_endpoint(spec: "OrchestratorSpec | JudgeSpec", what: str) -> ChatEndpoint:
  """The `ChatEndpoint` a spec names; a bad setting (e.g. a missing key) is a BenchmarkError."""
  try:
    return ChatEndpoint(spec.base_url, spec.model, api_key_env=spec.api_key_env,
                        price_in_per_1m=spec.price_in_per_1m,
                        price_out_per_1m=spec.price_out_per_1m)
  except JudgeConfigError as e:
    raise BenchmarkError(f"{what}: {e}") from None


def build_orchestrator(spec: OrchestratorSpec, tools: dict[str, Tool], settings: RunSettings):
  """The orchestrator `spec` describes; validates it without contacting the endpoint."""
  if spec.kind not in ORCHESTRATORS:
    raise BenchmarkError(f"--orchestrator={spec.kind!r}: expected one of {list(ORCHESTRATORS)}")
  if not spec.base_url or not spec.model:
    raise BenchmarkError(f"--orchestrator={spec.kind} needs --base_url and --model")
  if spec.max_tokens < 1:
    raise BenchmarkError(f"--max_tokens={spec.max_tokens} must be >= 1")
  if spec.kind != "checkpoint":
    endpoint = chat_endpoint(spec, "orchestrator endpoint")
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
  from transformers import AutoTokenizer

  from orchestra.agent.chat_format import IM_END
  if not os.path.isdir(path):
    raise BenchmarkError(f"--tokenizer={path}: no such folder")
  try:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
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


# ----------------------------------------------------------------------------- items


def select_items(items: Sequence[QAItem], limit: int = 0, sample_seed: int | None = None
                 ) -> list[QAItem]:
  """The first `limit` items (0: all), or a seeded random sample of `limit` (file order kept)."""
  if limit < 0:
    raise BenchmarkError(f"--limit={limit} must be >= 0 (0 = every item)")
  if not limit or limit >= len(items):
    return list(items)
  if sample_seed is None:
    return list(items[:limit])
  chosen = sorted(random.Random(sample_seed).sample(range(len(items)), limit))
  return [items[i] for i in chosen]


def messages_for(item: QAItem, kind: str, system_prompt: str = SYSTEM_PROMPT
                 ) -> list[dict[str, str]]:
  """System + user messages for one item: the question, then how to answer."""
  hint = ANSWER_HINTS.get(item.grader, DEFAULT_ANSWER_HINT)
  how = NO_TOOLS_INSTRUCTION if kind == "no_tools" else TOOLS_INSTRUCTION
  messages = [{"role": "user", "content": f"{item.question.strip()}\n\n{how} {hint}"}]
  return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages


# ----------------------------------------------------------------------------- results file


class ResultsStore:
  """OUT_DIR/results.jsonl: one JSON record per finished item, appended atomically."""

  def __init__(self, out_dir: str):
    self.out_dir = out_dir
    self.path = os.path.join(out_dir, RESULTS_FILE)

  def load(self) -> dict[str, dict[str, Any]]:
    """id -> its last record; a torn (unterminated or unparseable) last line is cut off."""
    records: dict[str, dict[str, Any]] = {}
    if not os.path.exists(self.path):
      return records
    with open(self.path, "rb") as f:
      data = f.read()
    good_end = 0
    for lineno, line in enumerate(data.splitlines(keepends=True), start=1):
      try:
        record = json.loads(line) if line.endswith(b"\n") else None
      except ValueError:
        record = None
      if not isinstance(record, dict) or "id" not in record:
        if good_end + len(line) == len(data):    # the last line: a crash mid-write
          print(f"{self.path}, line {lineno}: dropping an incomplete record", file=sys.stderr)
          with open(self.path, "r+b") as f:
            f.truncate(good_end)
          break
        raise BenchmarkError(f"{self.path}, line {lineno}: not a result record; delete the "
                             "line or use another --out")
      records[str(record["id"])] = record
      good_end += len(line)
    return records

  def append(self, record: dict[str, Any]) -> None:
    """Writes `record` as one line with a single write, then fsyncs."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
      os.fsync(fd)
    finally:
      os.close(fd)

  def rewrite(self, records: Sequence[dict[str, Any]]) -> None:
    """Replaces the file with `records` (atomically: temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=".results-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, self.path)


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


PINNED = ("benchmark", "data_sha256", "orchestrator.kind", "orchestrator.model", "tools", "grader")


def _get(setup: dict[str, Any], dotted: str) -> Any:
  value: Any = setup
  for part in dotted.split("."):
    value = value.get(part) if isinstance(value, dict) else None
  return value


def pin_run(out_dir: str, setup: dict[str, Any], ignore: Sequence[str] = ()) -> None:
  """Writes OUT_DIR/run.json, or checks that the run already there has the same setup.

  Compared: PINNED less `ignore` (the endpoint URL may change between resumes: a restarted
  server on another port serves the same model).
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, RUN_FILE)
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise BenchmarkError(f"{path}: unreadable ({e}); delete it or use another --out") from None
    for key in PINNED:
      if key not in ignore and _get(old, key) != _get(setup, key):
        raise BenchmarkError(f"{out_dir} holds a run with another {key} ({_get(old, key)!r}, "
                             f"now {_get(setup, key)!r}); use another --out to start a new run, "
                             "or the same settings to resume this one")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(setup, f, indent=2)


# ----------------------------------------------------------------------------- grading


async def grade_item(item: QAItem, outcome: Outcome, judge: Judge | None
                     ) -> tuple[bool, dict[str, Any], Verdict | None]:
  """(correct, rule grade, judge verdict): the judge decides when there is one."""
  rule = grade(item.grader, outcome.answer, item.answer, item.aliases)
  rule_dict = dataclasses.asdict(rule)
  if judge is None:
    return rule.correct, rule_dict, None
  verdict = await judge.judge_qa(item.question, item.answer, outcome.answer)
  return bool(verdict.correct), rule_dict, verdict


def _verdict_dict(verdict: Verdict | None) -> dict[str, Any] | None:
  if verdict is None:
    return None
  return {"correct": verdict.correct, "extracted_answer": verdict.extracted_answer,
          "reasoning": verdict.reasoning, "error": verdict.error, "cost_usd": verdict.cost_usd,
          "cached": verdict.cached, "raw": _cut(verdict.raw, 1000)}


def make_record(item: QAItem, outcome: Outcome, seed: int, correct: bool,
                rule: dict[str, Any], verdict: Verdict | None) -> dict[str, Any]:
  """The results.jsonl line of one item."""
  return {
      "id": item.id, "status": "error" if outcome.error else "done",
      "categories": list(item.categories), "question": item.question, "gold": item.answer,
      "aliases": list(item.aliases), "prediction": outcome.answer, "correct": bool(correct),
      "rule_grade": rule, "judge": _verdict_dict(verdict),
      "judge_error": bool(verdict is not None and verdict.judge_error),
      "cost_usd": outcome.cost_usd, "latency_s": outcome.latency_s, "turns": outcome.turns,
      "tool_calls": outcome.tool_calls, "finish_reason": outcome.finish_reason,
      "format_errors": outcome.format_errors, "error": outcome.error, "seed": seed,
      "transcript": outcome.transcript,
  }


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class RunCounts:
  n_selected: int
  n_resumed: int                           # already done before this run
  n_ran: int                               # run now


async def run_items(items: Sequence[QAItem], orchestrator, store: ResultsStore,
                    settings: RunSettings, *, kind: str, judge: Judge | None = None,
                    progress: Callable[[str], None] | None = None) -> RunCounts:
  """Runs every item of `items` without a `done` record in `store`; appends each result."""
  done = {k for k, r in store.load().items() if r.get("status") == "done"}
  todo = [(i, item) for i, item in enumerate(items) if item.id not in done]
  counts = RunCounts(len(items), len(items) - len(todo), 0)
  gate = asyncio.Semaphore(max(1, settings.concurrency))

  async def one(index: int, item: QAItem):
    seed = settings.seed + index
    async with gate:
      outcome = await orchestrator.solve(messages_for(item, kind, settings.system_prompt), seed)
      correct, rule, verdict = await grade_item(item, outcome, judge)
    record = make_record(item, outcome, seed, correct, rule, verdict)
    store.append(record)
    counts.n_ran += 1
    if progress:
      status = "ERROR " + str(outcome.error)[:120] if outcome.error else (
          "correct" if correct else "wrong")
      progress(f"[{counts.n_resumed + counts.n_ran}/{counts.n_selected}] {item.id}: {status}, "
               f"{outcome.turns} turns, ${outcome.cost_usd:.5f}, {outcome.latency_s:.1f}s, "
               f"calls {outcome.tool_calls}")

  await asyncio.gather(*(one(i, item) for i, item in todo))
  return counts


async def regrade(items: Sequence[QAItem], store: ResultsStore, judge: Judge | None) -> int:
  """Grades every stored record again (judge replies come from its cache); returns how many."""
  by_id = {item.id: item for item in items}
  records = list(store.load().values())
  n = 0
  for record in records:
    item = by_id.get(record["id"])
    if item is None or record.get("status") != "done":
      continue
    outcome = Outcome(answer=record.get("prediction"), finish_reason=record["finish_reason"])
    correct, rule, verdict = await grade_item(item, outcome, judge)
    record.update(correct=correct, rule_grade=rule, judge=_verdict_dict(verdict),
                  judge_error=bool(verdict is not None and verdict.judge_error))
    n += 1
  store.rewrite(records)
  return n


def selected_records(items: Sequence[QAItem], store: ResultsStore) -> list[dict[str, Any]]:
  """The stored record of each selected item that has one, in item order."""
  records = store.load()
  return [records[item.id] for item in items if item.id in records]


# ----------------------------------------------------------------------------- whole runs


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
  """An LLM judge endpoint; replies are cached in `cache_dir` (default OUT_DIR/judge_cache)."""
  base_url: str
  model: str
  api_key_env: str | None = None
  price_in_per_1m: float = 0.0
  price_out_per_1m: float = 0.0
  max_tokens: int = 1024
  temperature: float | None = 0.0          # None: the endpoint's default (reasoning models)
  cache_dir: str | None = None


def build_judge(spec: JudgeSpec, out_dir: str) -> Judge:
  """The `Judge` of `spec` (validated; nothing is sent)."""
  return Judge(chat_endpoint(spec, "judge"), spec.cache_dir or os.path.join(out_dir, "judge_cache"),
               max_tokens=spec.max_tokens, temperature=spec.temperature)


def run_setup(benchmark: str, data_path: str, spec: OrchestratorSpec,
              tools: dict[str, Tool], judge: JudgeSpec | None) -> dict[str, Any]:
  """What run.json pins and report.json repeats (no secrets: key *names* only)."""
  return {"benchmark": benchmark, "label": spec.default_label(),
          "data": os.path.abspath(data_path), "data_sha256": file_sha256(data_path),
          "orchestrator": {"kind": spec.kind, "model": spec.model,
                           "base_url": spec.base_url},
          "orchestrator_price_per_1m": [spec.price_in_per_1m, spec.price_out_per_1m],
          "tools": sorted(tools),
          "grader": f"judge:{judge.model}" if judge else "rules"}


def dry_run_summary(benchmark: str, qa_set, items: Sequence[QAItem],
                    tools: dict[str, Tool] | None, spec: OrchestratorSpec | None,
                    judge: JudgeSpec | None) -> dict[str, Any]:
  """The JSON line `launch/eval.py --dry_run` prints."""
  from orchestra.envs.qa import by_category
  return {"benchmark": benchmark, "n_items": len(items), "n_skipped": qa_set.n_skipped,
          "by_category": by_category(list(items)), "n_loaded": len(qa_set.items),
          "skipped": qa_set.skipped, "data": os.path.abspath(qa_set.path),
          "tools": sorted(tools or {}),
          "orchestrator": None if spec is None else {"kind": spec.kind, "model": spec.model},
          "grader": f"judge:{judge.model}" if judge else "rules"}


async def run_benchmark(benchmark: str, qa_set, items: Sequence[QAItem],
                        spec: OrchestratorSpec, tools: dict[str, Tool], settings: RunSettings,
                        out_dir: str, judge_spec: JudgeSpec | None = None, *,
                        regrade_only: bool = False,
                        progress: Callable[[str], None] | None = None
                        ) -> tuple[RunCounts, dict[str, Any], dict[str, str]]:
  """Runs (or, with `regrade_only`, re-grades) `items`, then writes report.json/report.md.

  Returns (counts, the report summary, the report paths).
  """
  from orchestra.eval.report import summarize, write_report
  setup = run_setup(benchmark, qa_set.path, spec, tools, judge_spec)
  # Everything is validated before run.json pins the setup, so a typo is not pinned.
  judge = build_judge(judge_spec, out_dir) if judge_spec else None
  orchestrator = None if regrade_only else build_orchestrator(spec, tools, settings)
  try:
    pin_run(out_dir, setup, ignore=("grader",) if regrade_only else ())
    store = ResultsStore(out_dir)
    if regrade_only:
      n = await regrade(items, store, judge)
      counts = RunCounts(len(items), n, 0)
    else:
      done = {k for k, r in store.load().items() if r.get("status") == "done"}
      if any(item.id not in done for item in items):
        await check_reachable(orchestrator.models_url, spec.api_key_env)
      counts = await run_items(items, orchestrator, store, settings, kind=spec.kind,
                               judge=judge, progress=progress)
  finally:
    if orchestrator is not None:
      await orchestrator.aclose()
    if judge is not None:
      await judge.aclose()
  summary = summarize(selected_records(items, store), setup)
  summary.update(n_selected=len(items), n_ran=counts.n_ran, n_resumed=counts.n_resumed,
                 n_missing=len(items) - summary["n"])
  return counts, summary, write_report(summary, out_dir)
