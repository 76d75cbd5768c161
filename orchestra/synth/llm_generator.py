"""The LLM generator: each stage is a prompt (prompts/<stage>.md) to any OpenAI-compatible
chat endpoint, whose JSON reply is checked against the stage's JSON schema.

A reply that is not JSON or does not fit is answered with the error and asked again, up
to `retries` times; then the stage is dropped with reason "malformed_json" or
"schema_mismatch" (an endpoint failure: "endpoint_error"). Nothing a reply says is ever
executed: tools come back as declarative specs. Every request's cost lands in the
stage's `Spend`. Requests run concurrently up to `max_concurrent_requests`.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from pathlib import Path
from typing import Any

import jsonschema

from orchestra.envs.domains.declarative import parse_tools
from orchestra.envs.domains.tables import Schema
from orchestra.eval.judge import ChatEndpoint, ChatError
from orchestra.synth.drafts import Spend, SynthDrop

PROMPTS_DIR = Path(__file__).parent / "prompts"
_OBJECT = {"type": "object"}
REPLY_SCHEMAS = {
    "domains": {"type": "object", "required": ["domains"], "properties": {"domains": {
        "type": "array", "items": {"type": "object", "required": ["name", "description"],
                                   "properties": {"name": {"type": "string"},
                                                  "description": {"type": "string"}}}}}},
    "schema": {"type": "object", "required": ["tables"]},
    "database": _OBJECT,
    "tools": {"type": "object", "required": ["tools"],
              "properties": {"tools": {"type": "array", "items": _OBJECT}}},
    "policy": {"type": "object", "required": ["policy"],
               "properties": {"policy": {"type": "string"}}},
    "tasks": {"type": "object", "required": ["tasks"],
              "properties": {"tasks": {"type": "array"}}},
}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
  keys = [k for k, _ in pairs]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:                  # json.loads would keep the last silently (e.g. two rows' ids)
    raise ValueError(f"repeated keys {repeated}")
  return dict(pairs)


def parse_reply(text: str) -> Any:
  """The JSON object of a reply (a ```json fence around it is allowed); ValueError if none
  or if an object repeats a key."""
  text = text.strip()
  fenced = _FENCE.match(text)
  return json.loads(fenced.group(1) if fenced else text, object_pairs_hook=_unique_keys)


def _dumps(obj: Any) -> str:
  return json.dumps(obj, indent=1)


class LLMGenerator:
  """A `Generator` (pipeline.py) over a chat endpoint.

  Args:
    endpoint: the `ChatEndpoint` (URL, model, key from the environment, prices).
    prompts_dir: folder of <stage>.md prompt templates ($name-style fields).
    max_concurrent_requests, temperature, max_tokens: per request.
    retries: re-asks after a malformed reply, before the stage is dropped.
    tasks_per_request: task drafts asked for in one request.
  """

  def __init__(self, endpoint: ChatEndpoint, prompts_dir: Path | str = PROMPTS_DIR, *,
               max_concurrent_requests: int = 8, temperature: float = 0.7,
               max_tokens: int = 4096, retries: int = 2, tasks_per_request: int = 10):
    self.endpoint, self.prompts_dir = endpoint, Path(prompts_dir)
    missing = [s for s in REPLY_SCHEMAS if not (self.prompts_dir / f"{s}.md").is_file()]
    if missing:
      raise FileNotFoundError(f"prompt templates {missing} not found in {self.prompts_dir}")
    self.temperature, self.max_tokens = temperature, max_tokens
    self.retries, self.tasks_per_request = retries, tasks_per_request
    self._sem = asyncio.Semaphore(max_concurrent_requests)

  def prompt(self, stage: str, **fields: Any) -> str:
    template = string.Template((self.prompts_dir / f"{stage}.md").read_text())
    return template.substitute({k: v if isinstance(v, str) else _dumps(v)
                                for k, v in fields.items()})

  async def ask(self, stage: str, spend: Spend, **fields: Any) -> Any:
    """The stage's checked JSON reply; SynthDrop after `retries` bad replies."""
    messages = [{"role": "user", "content": self.prompt(stage, **fields)}]
    for _ in range(self.retries + 1):
      try:
        async with self._sem:
          reply = await self.endpoint.chat(messages, max_tokens=self.max_tokens,
                                           temperature=self.temperature)
      except ChatError as e:
        raise SynthDrop("endpoint_error", str(e)) from None
      spend.add(Spend(reply.cost_usd, 1, reply.prompt_tokens, reply.completion_tokens))
      try:
        obj = parse_reply(reply.content)
      except ValueError as e:
        reason, detail = "malformed_json", f"not JSON: {e}"
      else:
        try:
          jsonschema.validate(obj, REPLY_SCHEMAS[stage])
          return obj
        except jsonschema.ValidationError as e:
          reason, detail = "schema_mismatch", e.message
      messages += [{"role": "assistant", "content": reply.content},
                   {"role": "user", "content": f"That reply is invalid ({detail}). Reply with "
                                               "the JSON object only."}]
    raise SynthDrop(reason, detail)

  async def domain_ideas(self, n: int, spend: Spend) -> list[dict]:
    return (await self.ask("domains", spend, n=str(n)))["domains"]

  async def schema(self, idea: dict, spend: Spend) -> dict:
    return await self.ask("schema", spend, name=idea["name"], description=idea["description"])

  async def database(self, idea: dict, schema: dict, spend: Spend) -> dict:
    return await self.ask("database", spend, name=idea["name"],
                          description=idea["description"], schema=schema)

  async def tools(self, idea: dict, schema: dict, spend: Spend) -> list[dict]:
    return (await self.ask("tools", spend, name=idea["name"], description=idea["description"],
                           schema=schema))["tools"]

  async def policy(self, idea: dict, schema: dict, tools: list[dict], spend: Spend) -> str:
    del schema
    return (await self.ask("policy", spend, name=idea["name"],
                           description=idea["description"], tools=tools))["policy"]

  async def tasks(self, idea: dict, schema: dict, db: dict, tools: list[dict], policy: str,
                  n: int, spend: Spend) -> list[dict]:
    """`n` drafts over ceil(n / tasks_per_request) concurrent requests; a failed request
    stands as one {"dropped": reason, "detail"} entry, so the rest is still used."""
    functions = [s.openai_schema() for s in parse_tools(tools, Schema.parse(schema))]
    sizes = [min(self.tasks_per_request, n - i) for i in range(0, n, self.tasks_per_request)]

    async def batch(size: int) -> list[dict]:
      try:
        return (await self.ask("tasks", spend, name=idea["name"], policy=policy,
                               tools=functions, database=db, n=str(size)))["tasks"]
      except SynthDrop as drop:
        return [{"dropped": drop.reason, "detail": drop.detail}]

    return [d for part in await asyncio.gather(*(batch(s) for s in sizes)) for d in part]
