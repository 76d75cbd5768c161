"""An OpenAI-compatible HTTP server over an engine, speaking vLLM's RL dialect.

Routes (the subset of vLLM 0.33's API the trainer and evaluators use):
  GET  /health, /v1/models
  POST /v1/completions        token-id or text prompts; `return_token_ids` adds
                              `token_ids` and `prompt_token_ids` to each choice;
                              `logprobs: 0` returns `logprobs.token_logprobs`;
                              `return_weight_versions` adds each choice's `weight_versions`
                              spans ([{"version": "7", "start": 0, "end": n}])
  POST /v1/chat/completions   `tools` rendered by the chat template, `<tool_call>`
                              blocks parsed into `message.tool_calls` (hermes style)
Weight control, as vLLM only with `dev_mode` (its `VLLM_SERVER_DEV_MODE=1`):
  POST /pause?mode=wait|keep|abort, POST /resume, GET /is_paused
                              while paused, new requests wait at the door; `wait` and
                              `abort` return once the engine's requests have finished
                              (a decoding batch cannot be cut short or frozen here, as
                              vLLM's scheduler aborts or freezes it), `keep` at once,
                              its in-flight requests finishing on the weights they began
                              with (and reporting that version)
  POST /reset_prefix_cache    empties the engine's prefix cache (if it has one)
  POST /collective_rpc        {"method": "reload_weights", "kwargs": {"weights_path": DIR}};
                              other kwargs fail as vLLM's worker fails them (500)
  POST /update_weight_version {"new_version": "7"} (here: an integer, the trainer's step)
  GET  /weight_info           {"weight_version": "7"}
Generation stops, as vLLM's does, at the request's `stop_token_ids` and, unless
`ignore_eos`, at the tokenizer's eos and the model's generation-config eos ids; a
choice's `stop_reason` is the stop id, None at the tokenizer's eos or at the length limit.
With an `api_key`, /v1 routes need `Authorization: Bearer <key>` (401 otherwise), as
vLLM's `--api-key`. A field vLLM honours and this server does not (stop strings,
penalties, top log-probs, forced tool calls, ...) is a 400 unless at its neutral value;
with `strict`, so are fields vLLM does not know (vLLM ignores them silently, so a payload
relying on one would do nothing there); tests run strict (`request_fields`). A malformed
request (body, field, pause mode, reload folder) is answered 400 with a detail that
names what is wrong.
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

from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.engines.request_fields import (CHAT_FIELDS, COMPLETION_FIELDS, check_known,
                                              check_supported)


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


def _sampling(body: dict[str, Any], default_max: int, eos_ids: tuple[int, ...]):
  """The request's SamplingParams; an invalid field is a 400 that names it (as vLLM's are).

  Generation stops at the request's `stop_token_ids` and, unless `ignore_eos`, at the
  model's `eos_ids` (vLLM's tokenizer eos and generation-config eos ids).
  """
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
  if not isinstance(body.get("ignore_eos", False), bool):
    raise HTTPException(400, f"ignore_eos must be true or false, got {body['ignore_eos']!r}")
  if not body.get("ignore_eos"):
    stops = stops + [t for t in eos_ids if t not in stops]
  try:
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          top_k=max(top_k, 0), stop_token_ids=tuple(stops), seed=seed)
  except (TypeError, ValueError) as e:
    raise HTTPException(400, f"invalid sampling parameters: {e}") from None


def _stop_reason(state: "ServerState", body: dict, c: Completion) -> int | None:
  """vLLM's `stop_reason`: the stop token id that ended the choice, or None when it ran
  to its length or ended at the tokenizer's eos (unless `ignore_eos`)."""
  if c.finish_reason != "stop" or not c.token_ids:
    return None
  last = c.token_ids[-1]
  return None if last == state.tokenizer.eos_token_id and not body.get("ignore_eos") else last


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
  _check_template_options(body)


_REFUSED_TEMPLATE_KWARGS = ("chat_template", "conversation", "tokenize")


def _check_template_options(body: dict[str, Any]) -> None:
  """400s for the chat template's options, as vLLM validates them."""
  for name in ("add_generation_prompt", "continue_final_message"):
    if not isinstance(body.get(name, False), bool):
      raise HTTPException(400, f"{name} must be true or false, got {body[name]!r}")
  if body.get("continue_final_message") and body.get("add_generation_prompt", True) is True:
    raise HTTPException(400, "Cannot set both continue_final_message and "
                             "add_generation_prompt to true")
  options = body.get("chat_template_kwargs")
  if options is not None and not isinstance(options, dict):
    raise HTTPException(400, f"chat_template_kwargs must be an object, got {options!r}")
  refused = sorted(set(options or ()) & set(_REFUSED_TEMPLATE_KWARGS))
  if refused:
    raise HTTPException(400, f"chat_template_kwargs {refused} are not allowed (vLLM refuses "
                             "them too; chat_template without --trust-request-chat-template)")
  documents = body.get("documents")
  if documents is not None and not (isinstance(documents, list)
                                    and all(isinstance(d, dict) for d in documents)):
    raise HTTPException(400, f"documents must be a list of objects, got {documents!r}"[:300])


def _chat_prompt_ids(tokenizer, body: dict[str, Any], tools) -> list[int]:
  """The chat template's rendering of `messages`, with the request's template options
  (`add_generation_prompt`, default true; `continue_final_message`; `documents`) and
  `chat_template_kwargs` (e.g. Qwen3's `enable_thinking`) over them, as vLLM merges them,
  tokenised (`add_special_tokens`, default false)."""
  options = {"tools": tools, "documents": body.get("documents"),
             "add_generation_prompt": body.get("add_generation_prompt", True),
             "continue_final_message": body.get("continue_final_message", False),
             **(body.get("chat_template_kwargs") or {})}
  prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False, **options)
  return list(tokenizer(prompt, add_special_tokens=bool(body.get("add_special_tokens")))[
      "input_ids"])


@dataclasses.dataclass
class ServerState:
  """What the routes share: the engine, its tokenizer and chat format, the pause gate."""
  engine: Any
  tokenizer: Any
  model_name: str
  max_model_len: int
  tool_call_parser: Callable[[str, set[str]], Any]
  end_of_turn: str
  model_eos_ids: tuple[int, ...] = ()
  gate: "_Gate" = dataclasses.field(default_factory=lambda: _Gate())
  created: int = dataclasses.field(default_factory=lambda: int(time.time()))

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """Where every request stops unless `ignore_eos`, as vLLM's: the tokenizer's eos and
    the model's generation-config eos ids (`model_eos_ids`)."""
    ids = (self.tokenizer.eos_token_id, *self.model_eos_ids)
    return tuple(dict.fromkeys(t for t in ids if t is not None and t >= 0))

  def check_model(self, body: dict):
    if body.get("model") not in (None, self.model_name):
      raise HTTPException(404, f"model {body.get('model')!r} not served; "
                               f"this is {self.model_name!r}")

  async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Completion:
    """One generation behind the pause gate; an engine error is the client's 400."""
    if len(prompt_ids) + sampling.max_tokens > self.max_model_len:
      raise HTTPException(400, f"prompt ({len(prompt_ids)}) + max_tokens ({sampling.max_tokens}) "
                               f"exceeds max_model_len {self.max_model_len}")
    async with self.gate:
      try:
        return await self.engine.generate(prompt_ids, sampling)
      except EngineError as e:
        raise HTTPException(400, str(e)) from None


def create_app(engine, tokenizer, model_name: str, max_model_len: int = 32_768, *,
               tool_call_parser: Callable[[str, set[str]], Any], end_of_turn: str,
               eos_token_ids: tuple[int, ...], dev_mode: bool = True,
               api_key: str | None = None, strict: bool = False) -> FastAPI:
  """The FastAPI app serving `engine` (a `JaxEngine` or anything with its methods).

  The chat format is the caller's: `end_of_turn` is the token that closes an assistant
  turn (e.g. "<|im_end|>"), and `tool_call_parser(text, tool_names)` returns an object
  with `.content` (text outside the calls) and `.calls` (each with `.name`, `.arguments`),
  e.g. `orchestra.agent.parser.parse_turn`. The engine layer parses nothing itself.
  `eos_token_ids` are the model's generation-config eos ids (`generation_eos_ids` of its
  folder): generation stops at them and at the tokenizer's eos (a Qwen3 chat model lists
  both <|im_end|> and <|endoftext|>; `()` stops at the tokenizer's alone).
  `dev_mode` adds the weight-control routes, `api_key` guards /v1, `strict` refuses
  fields vLLM does not know (module docstring). Each route is a function of
  (`ServerState`, request body) below.
  """
  state = ServerState(engine, tokenizer, model_name, max_model_len, tool_call_parser,
                      end_of_turn, tuple(eos_token_ids))
  app = FastAPI(title="orchestra serve")
  if api_key:
    _require_key(app, api_key)

  def post(path: str, handler, known: frozenset[str] | None = None, kind: str | None = None):
    async def route(request: Request):
      body = await _json_object(request)
      if strict and known is not None:
        check_known(body, known, path)
      if kind is not None:
        check_supported(body, kind)
      return await handler(state, body)
    app.post(path)(route)

  post("/v1/completions", completions, COMPLETION_FIELDS, "completions")
  post("/v1/chat/completions", chat_completions, CHAT_FIELDS, "chat")

  @app.get("/health")
  async def health():
    return {"status": "ok"}

  @app.get("/v1/models")
  async def models():
    return {"object": "list", "data": [{"id": model_name, "object": "model",
                                        "created": state.created, "owned_by": "orchestra",
                                        "max_model_len": max_model_len}]}

  if dev_mode:
    _weight_routes(app, state, post)
  return app


def _weight_routes(app: FastAPI, state: ServerState, post) -> None:
  """vLLM's dev/RL routes (behind VLLM_SERVER_DEV_MODE there, `dev_mode` here)."""
  post("/collective_rpc", collective_rpc)
  post("/update_weight_version", update_weight_version)

  @app.post("/pause")
  async def pause(mode: str = "abort"):
    return await _pause(state.gate, mode)

  @app.post("/resume")
  async def resume():
    state.gate.open.set()
    return {"status": "resumed"}                  # vLLM's answers, word for word

  @app.get("/is_paused")
  async def is_paused():
    return {"is_paused": not state.gate.open.is_set()}

  @app.post("/reset_prefix_cache")
  async def reset_prefix_cache():
    cache = getattr(state.engine, "prefix_cache", None)
    if cache is not None:
      cache.clear()
    return JSONResponse({"success": True})

  @app.get("/weight_info")
  async def weight_info():
    return {"weight_version": str(state.engine.weight_version)}


def _require_key(app: FastAPI, api_key: str) -> None:
  """As vLLM's --api-key: /v1 requests without `Authorization: Bearer <key>` get 401."""

  @app.middleware("http")
  async def check_key(request: Request, call_next):
    if request.url.path.startswith("/v1") and request.method != "OPTIONS":
      scheme, _, key = request.headers.get("authorization", "").partition(" ")
      if scheme.lower() != "bearer" or key != api_key:
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    return await call_next(request)


async def _pause(gate: "_Gate", mode: str) -> dict:
  if mode not in ("wait", "keep", "abort"):
    raise HTTPException(400, f"mode {mode!r}: expected wait, keep or abort")
  gate.open.clear()
  if mode != "keep":          # in-flight batches cannot be cut short here: abort waits too
    await gate.idle.wait()
  return {"status": "paused"}


async def completions(state: ServerState, body: dict) -> dict:
  """POST /v1/completions: text or token-id prompts (a batch of either), n samples each."""
  state.check_model(body)
  if body.get("stream"):
    raise HTTPException(400, "stream must be false: this server does not stream")
  # Tokenising a long prompt takes seconds: a worker thread keeps the event loop (and
  # /health, and every other request) free meanwhile.
  prompts = await asyncio.to_thread(_prompts, body.get("prompt"), state.tokenizer,
                                    body.get("add_special_tokens", True) is not False)
  sampling = _sampling(body, default_max=16, eos_ids=state.eos_ids)
  n = _number(body, "n", int, 1, lambda v: v >= 1, "an integer >= 1")
  jobs = [state.generate(p, sampling if sampling.seed is None else
                         dataclasses.replace(sampling, seed=sampling.seed + k))
          for p in prompts for k in range(n)]
  results = await asyncio.gather(*jobs)
  skip_special = bool(body.get("skip_special_tokens", True))
  choices = [_completion_choice(state, body, i, c, prompts[i // n], skip_special)
             for i, c in enumerate(results)]
  prompt_tokens = sum(len(p) for p in prompts) * n
  completion_tokens = sum(len(c.token_ids) for c in results)
  return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
          "created": int(time.time()), "model": state.model_name, "choices": choices,
          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}}


def _completion_choice(state: ServerState, body: dict, index: int, c: Completion,
                       prompt: list[int], skip_special: bool) -> dict:
  tokenizer = state.tokenizer
  choice = {"index": index, "text": tokenizer.decode(c.token_ids, skip_special_tokens=skip_special),
            "finish_reason": c.finish_reason, "stop_reason": _stop_reason(state, body, c),
            "weight_versions": _versions(body, c), "logprobs": None}
  if body.get("logprobs") is not None:
    choice["logprobs"] = {"tokens": tokenizer.convert_ids_to_tokens(c.token_ids),
                          "token_logprobs": c.logprobs, "top_logprobs": None,
                          "text_offset": None}
  if body.get("return_token_ids"):
    choice["token_ids"] = c.token_ids
    choice["prompt_token_ids"] = prompt
  return choice


def _versions(body: dict, c: Completion) -> list[dict] | None:
  """vLLM's per-choice `weight_versions` (one span: weights change only while paused)."""
  if not body.get("return_weight_versions"):
    return None
  return [{"version": str(c.weight_version), "start": 0, "end": len(c.token_ids)}]


async def chat_completions(state: ServerState, body: dict) -> dict:
  """POST /v1/chat/completions: the chat template renders `messages` and `tools`; the
  reply's tool calls are parsed by the caller's `tool_call_parser`."""
  state.check_model(body)
  _check_chat(body)
  tools = body.get("tools") or None
  try:                      # rendered and tokenised off the event loop, as in completions
    prompt_ids = await asyncio.to_thread(_chat_prompt_ids, state.tokenizer, body, tools)
  except Exception as e:  # noqa: BLE001 - a template error is the client's bad request
    raise HTTPException(400, f"cannot render messages: {e}") from None
  c = await state.generate(prompt_ids, _sampling(body, default_max=512,
                                                 eos_ids=state.eos_ids))
  choice = {"index": 0, **_chat_message(state, body, tools, c),
            "stop_reason": _stop_reason(state, body, c),
            "weight_versions": _versions(body, c), "logprobs": None}
  if body.get("logprobs"):
    tokens = state.tokenizer.convert_ids_to_tokens(c.token_ids)
    choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": None,
                                       "top_logprobs": []}
                                      for t, lp in zip(tokens, c.logprobs, strict=True)]}
  if body.get("return_token_ids"):
    choice["token_ids"] = c.token_ids
  return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
          "created": int(time.time()), "model": state.model_name, "choices": [choice],
          "prompt_token_ids": prompt_ids if body.get("return_token_ids") else None,
          "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(c.token_ids),
                    "total_tokens": len(prompt_ids) + len(c.token_ids)}}


def _chat_message(state: ServerState, body: dict, tools, c: Completion) -> dict:
  """{"message", "finish_reason"}: the reply without its stop token, tool calls parsed."""
  text = state.tokenizer.decode(c.token_ids, skip_special_tokens=False)
  for stop in (state.end_of_turn, state.tokenizer.eos_token):
    if stop and text.endswith(stop):
      text = text[:-len(stop)]
  message: dict[str, Any] = {"role": "assistant", "content": text}
  finish = c.finish_reason
  if tools and body.get("tool_choice", "auto") == "auto":
    parsed = state.tool_call_parser(text, {t["function"]["name"] for t in tools})
    calls = list(parsed.calls)
    if body.get("parallel_tool_calls") is False:     # vLLM keeps the first call
      calls = calls[:1]
    if calls:
      message["content"] = parsed.content or None
      message["tool_calls"] = [
          {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
           "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
          for call in calls]
      finish = "tool_calls"
  return {"message": message, "finish_reason": finish}


RELOAD_KWARGS = ("weights_path", "weights_iterator", "is_checkpoint_format")   # vLLM 0.33


async def collective_rpc(state: ServerState, body: dict) -> dict:
  """POST /collective_rpc: only `reload_weights(weights_path=DIR)`, an HF folder.

  The weight version does not change (vLLM sets it with /update_weight_version); a kwarg
  vLLM's `reload_weights` does not take fails with vLLM's 500, not silently.
  """
  if body.get("method") != "reload_weights":
    raise HTTPException(400, f"method {body.get('method')!r} is not supported; "
                             "only reload_weights")
  kwargs = body.get("kwargs") or {}
  if not isinstance(kwargs, dict):
    raise HTTPException(400, f"kwargs must be an object, got {type(kwargs).__name__}")
  unexpected = sorted(set(kwargs) - set(RELOAD_KWARGS))
  if unexpected:
    raise HTTPException(500, "Call to collective_rpc method failed: reload_weights() got an "
                             f"unexpected keyword argument {unexpected[0]!r}")
  path = kwargs.get("weights_path")
  if not path or not isinstance(path, str):
    raise HTTPException(400, "reload_weights needs kwargs.weights_path (an HF folder) here")
  engine = state.engine
  try:
    await engine.update_weights(path, engine.weight_version)
  except Exception as e:  # noqa: BLE001 - report a bad folder to the trainer
    raise HTTPException(400, f"reload_weights from {path} failed: {e}") from None
  return {"results": [None]}


async def update_weight_version(state: ServerState, body: dict) -> dict:
  """POST /update_weight_version {"new_version": "7"}: the version later choices report."""
  version = body.get("new_version")
  if not isinstance(version, str) or not version.isdigit():
    raise HTTPException(400, f"new_version must be a string of digits here (the trainer's "
                             f"step), got {version!r}")
  state.engine.weight_version = int(version)
  return {"success": True, "new_version": version}


def _prompts(prompt, tokenizer, add_special_tokens: bool) -> list[list[int]]:
  """Normalises a completions `prompt` (text, ids, or a batch of either) to id lists; text
  is tokenised with the tokenizer's special tokens (BOS...) unless `add_special_tokens` is
  false, as vLLM does."""
  if isinstance(prompt, str):
    prompt = [prompt]
  if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
    return [prompt]
  if not isinstance(prompt, list) or not prompt:
    raise HTTPException(400, "prompt must be text, token ids, or a non-empty list of either")
  out = []
  for p in prompt:
    if isinstance(p, str):
      out.append(list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]))
    elif isinstance(p, list) and p and all(isinstance(t, int) for t in p):
      out.append(p)
    else:
      raise HTTPException(400, "each prompt must be text or a non-empty list of token ids")
  return out
