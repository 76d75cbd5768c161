"""An OpenAI-compatible HTTP server over an engine, speaking vLLM's RL dialect.

Routes (the subset of vLLM's API the trainer and evaluators use):
  GET  /health, /v1/models
  POST /v1/completions        token-id or text prompts; `return_token_ids` adds
                              `token_ids` and `prompt_token_ids` to each choice;
                              `logprobs: 0` returns `logprobs.token_logprobs`
  POST /v1/chat/completions   `tools` rendered by the chat template, `<tool_call>`
                              blocks parsed into `message.tool_calls` (hermes style)
  POST /pause?mode=wait|keep|abort, POST /resume, GET /is_paused
  POST /reset_prefix_cache    accepted for parity (this engine keeps no prefix cache)
  POST /collective_rpc        {"method": "reload_weights", "kwargs": {"weights_path": DIR}}
  GET  /weight_version        extension: the current weight version
Each choice also reports the `weight_version` that produced it (as vLLM 0.33
does with `return_weight_versions`). A malformed request (body, field, pause mode,
reload folder) is answered 400 with a detail that names what is wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from orchestra.engines.base import EngineError, SamplingParams


class _Gate:
  """Pause/resume: requests wait while paused; `wait` mode drains in-flight ones."""

  def __init__(self):
    self.open = asyncio.Event()
    self.open.set()
    self.in_flight = 0
    self.idle = asyncio.Event()
    self.idle.set()

  async def __aenter__(self):
    await self.open.wait()
    self.in_flight += 1
    self.idle.clear()

  async def __aexit__(self, *exc):
    self.in_flight -= 1
    if self.in_flight == 0:
      self.idle.set()


def _number(body: dict[str, Any], name: str, kind: type, default, valid, expected: str,
            where: str = ""):
  """`body[name]` as `kind` (int or float), or `default` when absent or null.

  A value that is no such number or fails `valid` is a 400 naming the field
  (`where` + `name`) and saying what is `expected`, as vLLM's validation errors do.
  """
  value = body.get(name)
  if value is None:
    return default
  try:
    if (isinstance(value, (bool, list, dict))
        or (kind is int and isinstance(value, float) and not value.is_integer())):
      raise TypeError
    number = kind(value)
  except (TypeError, ValueError):
    number = None
  if number is None or not valid(number):
    raise HTTPException(400, f"{where}{name} must be {expected}, got {value!r}")
  return number


def _sampling(body: dict[str, Any], default_max: int, extra_stops: tuple[int, ...] = ()):
  """The request's SamplingParams; an invalid field is a 400 that names it (as vLLM's are)."""
  max_name = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
  max_tokens = _number(body, max_name, int, default_max, lambda v: v >= 1, "an integer >= 1")
  temperature = _number(body, "temperature", float, 1.0, lambda v: v >= 0, "a number >= 0")
  top_p = _number(body, "top_p", float, 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
  top_k = _number(body, "top_k", int, 0, lambda v: v >= -1, "an integer >= -1 (-1 or 0: off)")
  seed = _number(body, "seed", int, None, lambda v: True, "an integer")
  stops = body.get("stop_token_ids") or []
  if not (isinstance(stops, list)
          and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in stops)):
    raise HTTPException(400, f"stop_token_ids must be a list of token ids, got {stops!r}")
  try:
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          top_k=max(top_k, 0), stop_token_ids=tuple(stops) + extra_stops,
                          seed=seed)
  except (TypeError, ValueError) as e:
    raise HTTPException(400, f"invalid sampling parameters: {e}") from None


async def _json_object(request: Request) -> dict[str, Any]:
  """The request body, which must be a JSON object; a 400 otherwise (not a 500)."""
  try:
    body = await request.json()
  except ValueError as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise HTTPException(400, f"request body is not valid JSON: {e}") from None
  if not isinstance(body, dict):
    raise HTTPException(400, f"request body must be a JSON object, got {type(body).__name__}")
  return body


def _check_chat(body: dict[str, Any]) -> None:
  """400s naming the field for chat requests vLLM would refuse (instead of a 500 or a guess)."""
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise HTTPException(400, "messages must be a non-empty list")
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
      raise HTTPException(400, f"messages[{i}] must be an object with a string role, "
                               f"got {message!r}"[:300])
  tools = body.get("tools")
  if tools is not None:
    if not isinstance(tools, list):
      raise HTTPException(400, f"tools must be a list, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
      function = tool.get("function") if isinstance(tool, dict) else None
      if (not isinstance(function, dict) or tool.get("type", "function") != "function"
          or not isinstance(function.get("name"), str) or not function["name"]):
        raise HTTPException(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": "
                                 f"{{\"name\": ..., \"parameters\": ...}}}}, got {tool!r}"[:300])
  if _number(body, "n", int, 1, lambda v: v >= 1, "an integer >= 1") != 1:
    raise HTTPException(400, "n must be 1: this server returns one chat choice per request")
  if body.get("stream"):
    raise HTTPException(400, "stream must be false: this server does not stream")


def _chat_prompt_ids(tokenizer, messages, tools) -> list[int]:
  prompt = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                         tokenize=False)
  return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def create_app(engine, tokenizer, model_name: str, max_model_len: int = 32_768, *,
               tool_call_parser: Callable[[str, set[str]], Any], end_of_turn: str) -> FastAPI:
  """The FastAPI app serving `engine` (a `JaxEngine` or anything with its methods).

  The chat format is the caller's: `end_of_turn` is the token that closes an assistant
  turn (e.g. "<|im_end|>"), and `tool_call_parser(text, tool_names)` returns an object
  with `.content` (text outside the calls) and `.calls` (each with `.name`, `.arguments`),
  e.g. `orchestra.agent.parser.parse_turn`. The engine layer parses nothing itself.
  """
  app = FastAPI(title="orchestra serve")
  gate = _Gate()
  created = int(time.time())
  eos = tokenizer.convert_tokens_to_ids(end_of_turn)
  eos_ids = tuple(t for t in {eos, tokenizer.eos_token_id} if t is not None and t >= 0)

  def check_model(body):
    if body.get("model") not in (None, model_name):
      raise HTTPException(404, f"model {body.get('model')!r} not served; this is {model_name!r}")

  async def run(prompt_ids: list[int], sampling: SamplingParams):
    if len(prompt_ids) + sampling.max_tokens > max_model_len:
      raise HTTPException(400, f"prompt ({len(prompt_ids)}) + max_tokens ({sampling.max_tokens}) "
                               f"exceeds max_model_len {max_model_len}")
    async with gate:
      try:
        return await engine.generate(prompt_ids, sampling)
      except EngineError as e:
        raise HTTPException(400, str(e)) from None

  @app.get("/health")
  async def health():
    return {"status": "ok"}

  @app.get("/v1/models")
  async def models():
    return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                        "owned_by": "orchestra", "max_model_len": max_model_len}]}

  @app.post("/v1/completions")
  async def completions(request: Request):
    body = await _json_object(request)
    check_model(body)
    if body.get("stream"):
      raise HTTPException(400, "stream must be false: this server does not stream")
    # Tokenising a long prompt takes seconds: a worker thread keeps the event loop (and
    # /health, and every other request) free meanwhile.
    prompts = await asyncio.to_thread(_prompts, body.get("prompt"), tokenizer)
    sampling = _sampling(body, default_max=16)
    n = _number(body, "n", int, 1, lambda v: v >= 1, "an integer >= 1")
    jobs = [run(p, sampling if sampling.seed is None else
                dataclasses.replace(sampling, seed=sampling.seed + k))
            for p in prompts for k in range(n)]
    results = await asyncio.gather(*jobs)
    choices = []
    for i, c in enumerate(results):
      prompt = prompts[i // n]
      choice = {"index": i, "text": tokenizer.decode(c.token_ids, skip_special_tokens=bool(
          body.get("skip_special_tokens", True))), "finish_reason": c.finish_reason,
                "stop_reason": c.token_ids[-1] if c.finish_reason == "stop" else None,
                "weight_version": c.weight_version, "logprobs": None}
      if body.get("logprobs") is not None:
        tokens = tokenizer.convert_ids_to_tokens(c.token_ids)
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": c.logprobs,
                              "top_logprobs": None, "text_offset": None}
      if body.get("return_token_ids"):
        choice["token_ids"] = c.token_ids
        choice["prompt_token_ids"] = prompt
      choices.append(choice)
    prompt_tokens = sum(len(p) for p in prompts) * n
    completion_tokens = sum(len(c.token_ids) for c in results)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}

  @app.post("/v1/chat/completions")
  async def chat(request: Request):
    body = await _json_object(request)
    check_model(body)
    _check_chat(body)
    messages, tools = body["messages"], body.get("tools") or None
    try:                      # rendered and tokenised off the event loop, as in completions
      prompt_ids = await asyncio.to_thread(_chat_prompt_ids, tokenizer, messages, tools)
    except Exception as e:  # noqa: BLE001 - a template error is the client's bad request
      raise HTTPException(400, f"cannot render messages: {e}") from None
    c = await run(prompt_ids, _sampling(body, default_max=512, extra_stops=eos_ids))
    text = tokenizer.decode(c.token_ids, skip_special_tokens=False)
    for stop in (end_of_turn, tokenizer.eos_token):
      if stop and text.endswith(stop):
        text = text[:-len(stop)]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = c.finish_reason
    if tools and body.get("tool_choice") != "none":
      parsed = tool_call_parser(text, {t["function"]["name"] for t in tools})
      if parsed.calls:
        message["content"] = parsed.content or None
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
            for call in parsed.calls]
        finish = "tool_calls"
    choice = {"index": 0, "message": message, "finish_reason": finish,
              "weight_version": c.weight_version, "logprobs": None}
    if body.get("logprobs"):
      tokens = tokenizer.convert_ids_to_tokens(c.token_ids)
      choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": None,
                                         "top_logprobs": []}
                                        for t, lp in zip(tokens, c.logprobs, strict=True)]}
    if body.get("return_token_ids"):
      choice["token_ids"] = c.token_ids
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name, "choices": [choice],
            "prompt_token_ids": prompt_ids if body.get("return_token_ids") else None,
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(c.token_ids),
                      "total_tokens": len(prompt_ids) + len(c.token_ids)}}

  @app.post("/pause")
  async def pause(mode: str = "wait"):
    if mode not in ("wait", "keep", "abort"):
      raise HTTPException(400, f"mode {mode!r}: expected wait, keep or abort")
    gate.open.clear()
    if mode != "keep":          # in-flight batches cannot be cut short here: abort waits too
      await gate.idle.wait()
    return {"paused": True}

  @app.post("/resume")
  async def resume():
    gate.open.set()
    return {"paused": False}

  @app.get("/is_paused")
  async def is_paused():
    return {"is_paused": not gate.open.is_set()}

  @app.post("/reset_prefix_cache")
  async def reset_prefix_cache():
    return JSONResponse({"status": "ok"})

  @app.get("/weight_version")
  async def weight_version():
    return {"weight_version": engine.weight_version}

  @app.post("/collective_rpc")
  async def collective_rpc(request: Request):
    body = await _json_object(request)
    if body.get("method") != "reload_weights":
      raise HTTPException(400, f"method {body.get('method')!r} is not supported; "
                               "only reload_weights")
    kwargs = body.get("kwargs") or {}
    if not isinstance(kwargs, dict):
      raise HTTPException(400, f"kwargs must be an object, got {type(kwargs).__name__}")
    path = kwargs.get("weights_path")
    if not path or not isinstance(path, str):
      raise HTTPException(400, "reload_weights needs kwargs.weights_path (an HF folder)")
    version = _number(kwargs, "weight_version", int, engine.weight_version + 1, lambda v: v >= 0,
                      "an integer >= 0", where="kwargs.")
    try:
      await engine.update_weights(path, version)
    except Exception as e:  # noqa: BLE001 - report a bad folder to the trainer
      raise HTTPException(400, f"reload_weights from {path} failed: {e}") from None
    return {"results": [None], "weight_version": version}

  return app


def _prompts(prompt, tokenizer) -> list[list[int]]:
  """Normalises a completions `prompt` (text, ids, or a batch of either) to id lists."""
  if isinstance(prompt, str):
    prompt = [prompt]
  if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
    return [prompt]
  if not isinstance(prompt, list) or not prompt:
    raise HTTPException(400, "prompt must be text, token ids, or a non-empty list of either")
  out = []
  for p in prompt:
    if isinstance(p, str):
      out.append(list(tokenizer(p, add_special_tokens=False)["input_ids"]))
    elif isinstance(p, list) and p and all(isinstance(t, int) for t in p):
      out.append(p)
    else:
      raise HTTPException(400, "each prompt must be text or a non-empty list of token ids")
  return out
