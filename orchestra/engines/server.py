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
does with `return_weight_versions`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from orchestra.agent.chat_format import IM_END
from orchestra.agent.parser import parse_turn
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


def _sampling(body: dict[str, Any], default_max: int, extra_stops: tuple[int, ...] = ()):
  top_k = int(body.get("top_k") or 0)
  try:
    return SamplingParams(
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or default_max),
        temperature=float(1.0 if body.get("temperature") is None else body["temperature"]),
        top_p=float(body.get("top_p") or 1.0), top_k=max(top_k, 0),
        stop_token_ids=tuple(int(t) for t in body.get("stop_token_ids") or ()) + extra_stops,
        seed=body.get("seed"))
  except (TypeError, ValueError) as e:
    raise HTTPException(400, f"invalid sampling parameters: {e}") from None


def create_app(engine, tokenizer, model_name: str, max_model_len: int = 32_768) -> FastAPI:
  """The FastAPI app serving `engine` (a `JaxEngine` or anything with its methods)."""
  app = FastAPI(title="orchestra serve")
  gate = _Gate()
  created = int(time.time())
  eos = tokenizer.convert_tokens_to_ids(IM_END)
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
    body = await request.json()
    check_model(body)
    prompts = _prompts(body.get("prompt"), tokenizer)
    sampling = _sampling(body, default_max=16)
    n = int(body.get("n") or 1)
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
    body = await request.json()
    check_model(body)
    messages, tools = body.get("messages"), body.get("tools") or None
    if not isinstance(messages, list) or not messages:
      raise HTTPException(400, "messages must be a non-empty list")
    try:
      prompt = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                             tokenize=False)
    except Exception as e:  # noqa: BLE001 - a template error is the client's bad request
      raise HTTPException(400, f"cannot render messages: {e}") from None
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    c = await run(prompt_ids, _sampling(body, default_max=512, extra_stops=eos_ids))
    text = tokenizer.decode(c.token_ids, skip_special_tokens=False)
    for stop in (IM_END, tokenizer.eos_token):
      if stop and text.endswith(stop):
        text = text[:-len(stop)]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = c.finish_reason
    if tools and body.get("tool_choice") != "none":
      parsed = parse_turn(text, {t["function"]["name"] for t in tools})
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
    body = await request.json()
    if body.get("method") != "reload_weights":
      raise HTTPException(400, f"method {body.get('method')!r} is not supported; "
                               "only reload_weights")
    kwargs = body.get("kwargs") or {}
    path = kwargs.get("weights_path")
    if not path:
      raise HTTPException(400, "reload_weights needs kwargs.weights_path (an HF folder)")
    version = int(kwargs.get("weight_version", engine.weight_version + 1))
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
