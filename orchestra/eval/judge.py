"""An LLM judge over any OpenAI-compatible chat endpoint, with an on-disk reply cache.

Three layers, each usable on its own:

  ChatEndpoint.chat(messages, tools=...)   one chat completion (retries on connection errors,
                                           429 and 5xx); cost from the usage block:
        cost_usd = (prompt_tokens * price_in_per_1m + completion_tokens * price_out_per_1m) / 1e6
  Judge.ask(messages) -> JudgeReply        a cached completion: the reply text is stored under
                                           sha256(model, messages), so asking again is free
                                           (cost 0, `cached=True`); `Judge.ask_json` also parses
                                           one JSON object out of the reply (e.g. to judge a
                                           tau2 natural-language assertion with its own prompt)
  Judge.judge_qa(question, gold, response) -> Verdict
                                           our QA prompt (`qa_messages`) and its structured
                                           verdict (`parse_verdict`): correct yes/no and the
                                           final answer the judge extracted. A reply without a
                                           clear yes/no is a judge error (`correct=None`),
                                           never counted as correct.

Cache files are `CACHE_DIR/<2 hex>/<sha256>.json`, written atomically (temporary file +
rename), so concurrent graders and crashed runs never leave a half-written entry. Delete the
folder to re-ask. HTTP failures are not cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from typing import Any

import httpx

from orchestra.http_retry import RequestFailed, describe_error, post_with_retries

PROMPT_VERSION = "orchestra-qa-judge-v1"
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_YES = {"yes", "y", "true", "correct", "1"}
_NO = {"no", "n", "false", "incorrect", "wrong", "0"}
_LINE_CORRECT = re.compile(r"^[\s*#>-]*\**correct\**\s*[:=]\s*\**\s*([A-Za-z]+)", re.IGNORECASE
                           | re.MULTILINE)
_LINE_EXTRACTED = re.compile(r"^[\s*#>-]*\**extracted[_ ]final[_ ]answer\**\s*[:=]\s*(.*)$",
                             re.IGNORECASE | re.MULTILINE)

JUDGE_SYSTEM = ("You grade answers to questions against a reference answer. You are strict, "
                "brief, and you reply with JSON only.")
JUDGE_TEMPLATE = """Decide whether the RESPONSE answers the QUESTION correctly, taking the REFERENCE ANSWER as ground truth.

QUESTION:
{question}

REFERENCE ANSWER:
{answer}

RESPONSE:
{response}

Rules:
1. First extract the final answer the response commits to, copied exactly; write "none" if it commits to no answer.
2. It is correct only if it means the same as the reference answer: the same entity, possibly with another spelling or name form; the same number up to rounding of the last digit or unit formatting; the same option letter for multiple choice.
3. Answers that are partial, hedged between options, give several different answers, or add a wrong qualification are incorrect.
4. Do not solve the question yourself and do not second-guess the reference answer.

Reply with exactly one JSON object and nothing else:
{{"extracted_final_answer": "<the response's final answer, or none>", "reasoning": "<one sentence>", "correct": "yes" or "no"}}"""


class ChatError(RuntimeError):
  """A chat request that failed after retries; the message names the URL and the reason."""


class JudgeConfigError(ValueError):
  """A judge or endpoint setting that cannot work (e.g. a missing API key); names the fix.

  `setting`: the `ChatEndpoint` argument at fault (base_url, model, api_key_env, ...), if one.
  """

  def __init__(self, message: str, setting: str | None = None):
    super().__init__(message)
    self.setting = setting


@dataclasses.dataclass
class ChatReply:
  """One chat completion, reduced to what callers need."""
  message: dict[str, Any]                 # the assistant message as returned (content, tool_calls)
  content: str                            # message content ("" if none)
  tool_calls: list[dict[str, Any]]        # OpenAI tool_calls ([] if none)
  finish_reason: str
  prompt_tokens: int
  completion_tokens: int
  cost_usd: float
  latency_s: float


class ChatEndpoint:
  """An OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, `launch/serve.py`, ...).

  Args:
    base_url: root including /v1, e.g. "https://api.openai.com/v1" or "http://host:8000/v1".
    model: model name sent with every request.
    api_key_env: environment variable holding the bearer key (None: an open local server).
    price_in_per_1m, price_out_per_1m: USD per 1M prompt / completion tokens.
    transport: an httpx transport (tests pass `httpx.MockTransport`).
  """

  def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None,
               price_in_per_1m: float = 0.0, price_out_per_1m: float = 0.0,
               timeout_s: float = 300.0, max_retries: int = 3, backoff_s: float = 1.0,
               transport: httpx.AsyncBaseTransport | None = None):
    if not base_url or not base_url.startswith(("http://", "https://")):
      raise JudgeConfigError(f"base_url {base_url!r} must start with http:// or https:// "
                             "(the endpoint root including /v1)", "base_url")
    if not model:
      raise JudgeConfigError("a model name is required for the chat endpoint", "model")
    for field, value in (("price_in_per_1m", price_in_per_1m),
                         ("price_out_per_1m", price_out_per_1m)):
      if not isinstance(value, (int, float)) or value < 0:
        raise JudgeConfigError(f"{field} must be a number >= 0, got {value!r}", field)
    headers = {}
    if api_key_env:
      key = os.environ.get(api_key_env)
      if not key:
        raise JudgeConfigError(f"environment variable {api_key_env} (the API key of {base_url}) "
                               "is not set; export it, or leave the key setting empty for an "
                               "open local server", "api_key_env")
      headers["Authorization"] = f"Bearer {key}"
    self.base_url, self.model = base_url.rstrip("/"), model
    self.url = self.base_url + "/chat/completions"
    self.price_in, self.price_out = float(price_in_per_1m), float(price_out_per_1m)
    self.max_retries, self.backoff_s = max_retries, backoff_s
    self._timeout, self._headers, self._transport = timeout_s, headers, transport
    self._client: httpx.AsyncClient | None = None

  def _http(self) -> httpx.AsyncClient:
    if self._client is None:          # created lazily, inside the event loop that uses it
      self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers,
                                       transport=self._transport)
    return self._client

  async def chat(self, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                 max_tokens: int | None = None, temperature: float | None = None,
                 seed: int | None = None, **extra: Any) -> ChatReply:
    """One completion of `messages`; raises ChatError when the endpoint fails."""
    payload: dict[str, Any] = {"model": self.model, "messages": messages, **extra}
    if tools:
      payload["tools"] = tools
    if max_tokens is not None:
      payload["max_completion_tokens"] = int(max_tokens)
    if temperature is not None:
      payload["temperature"] = float(temperature)
    if seed is not None:
      payload["seed"] = int(seed)
    start = time.perf_counter()
    body = await self._post(payload)
    latency = time.perf_counter() - start
    try:
      choice = body["choices"][0]
      message = dict(choice["message"])
      usage = body.get("usage") or {}
      prompt_tokens = int(usage.get("prompt_tokens") or 0)
      completion_tokens = int(usage.get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, ValueError) as e:
      raise ChatError(f"{self.url}: malformed chat response ({type(e).__name__}: {e})") from None
    tool_calls = message.get("tool_calls") or []
    return ChatReply(message=message, content=message.get("content") or "",
                     tool_calls=list(tool_calls), finish_reason=choice.get("finish_reason") or "",
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     cost_usd=(prompt_tokens * self.price_in
                               + completion_tokens * self.price_out) / 1e6,
                     latency_s=latency)

  async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
    try:
      response = await post_with_retries(self._http(), self.url, max_retries=self.max_retries,
                                         backoff_s=self.backoff_s, json=payload)
    except RequestFailed as e:
      if e.timed_out:
        raise ChatError(f"{self.url}: timed out after {self._timeout:g} s") from None
      raise ChatError(f"{self.url}: {e.reason}") from None
    if response.status_code >= 400:
      raise ChatError(f"{self.url}: {describe_error(response, self._headers)}")
    try:
      return response.json()
    except ValueError:
      raise ChatError(f"{self.url}: response is not JSON: {response.text[:200]!r}") from None

  async def aclose(self) -> None:
    if self._client is not None:
      await self._client.aclose()
      self._client = None


@dataclasses.dataclass
class JudgeReply:
  text: str
  cost_usd: float                         # 0 when served from the cache
  cached: bool
  prompt_tokens: int = 0
  completion_tokens: int = 0


@dataclasses.dataclass
class Verdict:
  """The judge's decision on one response."""
  correct: bool | None                    # None: the judge's reply had no clear verdict
  extracted_answer: str | None            # the final answer the judge found in the response
  reasoning: str | None = None
  error: str | None = None                # why there is no verdict (judge error), else None
  raw: str = ""                           # the judge's reply
  cost_usd: float = 0.0
  cached: bool = False

  @property
  def judge_error(self) -> bool:
    return self.correct is None


def qa_messages(question: str, answer: str, response: str) -> list[dict[str, str]]:
  """The judge prompt for one (question, reference answer, response)."""
  return [{"role": "system", "content": JUDGE_SYSTEM},
          {"role": "user", "content": JUDGE_TEMPLATE.format(question=question.strip(),
                                                            answer=answer.strip(),
                                                            response=response.strip())}]


def parse_json_object(text: str) -> dict[str, Any] | None:
  """The first JSON object in a reply (inside ``` fences or surrounded by prose), or None."""
  text = _THINK.sub("", text or "")
  candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
  decoder = json.JSONDecoder()
  for candidate in candidates:
    for start in (i for i, ch in enumerate(candidate) if ch == "{"):
      try:
        value, _ = decoder.raw_decode(candidate, start)
      except json.JSONDecodeError:
        continue
      if isinstance(value, dict):
        return value
  return None


def yes_no(value: Any) -> bool | None:
  """True / False for yes/no-like values (booleans, "yes", "Correct", ...), None otherwise."""
  if isinstance(value, bool):
    return value
  if isinstance(value, int) and value in (0, 1):
    return bool(value)
  if isinstance(value, str):
    word = value.strip().strip(".!*\"'").casefold()
    if word in _YES:
      return True
    if word in _NO:
      return False
  return None


def parse_verdict(text: str) -> Verdict:
  """The structured verdict in a judge reply: a JSON object with `correct`, or key: value lines.

  Accepted: {"correct": "yes"|"no"|true|false, "extracted_final_answer": ...} anywhere in the
  reply (code fences and surrounding prose are fine), or HLE-style lines
  `extracted_final_answer: ...` / `correct: yes`. Anything else (no verdict, a value other
  than yes/no, conflicting lines, an empty reply) is a judge error with `correct=None`.
  """
  raw = text or ""
  body = _THINK.sub("", raw).strip()
  if not body:
    return Verdict(None, None, error="empty judge reply", raw=raw)
  obj = parse_json_object(body)
  if obj is not None and "correct" in obj:
    correct = yes_no(obj["correct"])
    extracted = obj.get("extracted_final_answer", obj.get("extracted_answer"))
    extracted = None if extracted is None else str(extracted)
    reasoning = obj.get("reasoning")
    if correct is None:
      return Verdict(None, extracted, error=f"'correct' must be yes or no, got {obj['correct']!r}",
                     raw=raw)
    return Verdict(correct, extracted, str(reasoning) if reasoning is not None else None, raw=raw)
  values = {yes_no(m.group(1)) for m in _LINE_CORRECT.finditer(body)}
  if not values:
    why = "JSON object without 'correct'" if obj is not None else "no JSON object"
    return Verdict(None, None, error=f"no verdict in judge reply ({why})", raw=raw)
  if None in values or len(values) > 1:
    return Verdict(None, None, error="ambiguous verdict lines in judge reply", raw=raw)
  m = _LINE_EXTRACTED.search(body)
  return Verdict(values.pop(), m.group(1).strip().strip("*").strip() if m else None, raw=raw)


class Judge:
  """Asks a chat endpoint and caches its replies on disk.

  Args:
    endpoint: the judge model (`ChatEndpoint`).
    cache_dir: folder for cached replies (None: no cache).
    max_tokens: reply budget per question.
    temperature: sampling temperature (0 for reproducible grading; None: endpoint default).
  """

  def __init__(self, endpoint: ChatEndpoint, cache_dir: str | None = None,
               max_tokens: int = 1024, temperature: float | None = 0.0):
    self.endpoint, self.cache_dir = endpoint, cache_dir
    self.max_tokens, self.temperature = max_tokens, temperature
    if cache_dir:
      os.makedirs(cache_dir, exist_ok=True)

  def cache_key(self, messages: list[dict[str, Any]]) -> str:
    """sha256 of the judge model and the messages (so of (question, answer, response) for QA)."""
    blob = json.dumps([PROMPT_VERSION, self.endpoint.model, messages], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()

  def _cache_path(self, key: str) -> str:
    return os.path.join(self.cache_dir, key[:2], key + ".json")

  def _read_cache(self, key: str) -> dict[str, Any] | None:
    if not self.cache_dir:
      return None
    try:
      with open(self._cache_path(key), encoding="utf-8") as f:
        entry = json.load(f)
    except (OSError, ValueError):
      return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("text"), str) else None

  def _write_cache(self, key: str, entry: dict[str, Any]) -> None:
    if not self.cache_dir:
      return
    path = self._cache_path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entry, f, ensure_ascii=False)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise

  async def ask(self, messages: list[dict[str, Any]]) -> JudgeReply:
    """The judge's reply to `messages`, from the cache if it was asked before.

    Raises ChatError when the endpoint fails (nothing is cached then).
    """
    key = self.cache_key(messages)
    entry = self._read_cache(key)
    if entry is not None:
      return JudgeReply(entry["text"], 0.0, True, entry.get("prompt_tokens", 0),
                        entry.get("completion_tokens", 0))
    reply = await self.endpoint.chat(messages, max_tokens=self.max_tokens,
                                     temperature=self.temperature)
    self._write_cache(key, {"model": self.endpoint.model, "messages": messages,
                            "text": reply.content, "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "cost_usd": reply.cost_usd})
    return JudgeReply(reply.content, reply.cost_usd, False, reply.prompt_tokens,
                      reply.completion_tokens)

  async def ask_json(self, messages: list[dict[str, Any]]
                     ) -> tuple[dict[str, Any] | None, JudgeReply]:
    """`ask`, then the first JSON object of the reply (None if it holds none)."""
    reply = await self.ask(messages)
    return parse_json_object(reply.text), reply

  async def judge_qa(self, question: str, answer: str, response: str | None) -> Verdict:
    """Our QA verdict on `response`; endpoint failures are judge errors too (never raises)."""
    if not response or not response.strip():
      return Verdict(False, None, reasoning="empty response (not sent to the judge)")
    try:
      reply = await self.ask(qa_messages(question, answer, response))
    except ChatError as e:
      return Verdict(None, None, error=f"judge request failed: {e}")
    verdict = parse_verdict(reply.text)
    verdict.cost_usd, verdict.cached = reply.cost_usd, reply.cached
    return verdict

  async def aclose(self) -> None:
    await self.endpoint.aclose()
