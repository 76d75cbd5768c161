"""`llm`: another model behind any OpenAI-compatible chat endpoint, used as a tool.

Cost is computed from the response's `usage`:
    cost_usd = (prompt_tokens * price_in_per_1m + completion_tokens * price_out_per_1m) / 1e6
Connection errors, 429 and 5xx responses are retried with exponential backoff;
anything else becomes an error observation.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from orchestra.http_retry import RequestFailed, describe_error, post_with_retries
from orchestra.tools.base import Tool, ToolConfigError, ToolResult



class LLMTool(Tool):
  """Args:
    name: the tool name the orchestrator calls (e.g. "expert-1").
    model: model name sent to the endpoint.
    base_url: endpoint root including /v1 (e.g. "http://10.0.0.7:8000/v1").
    api_key_env: environment variable holding the key (None for an open local server).
    price_in_per_1m, price_out_per_1m: USD per 1M prompt / completion tokens.
    description: capability profile shown to the orchestrator.
    system_prompt: optional system message for every call.
  """

  def __init__(self, name: str, model: str, base_url: str, *, api_key_env: str | None = None,
               price_in_per_1m: float = 0.0, price_out_per_1m: float = 0.0,
               description: str = "Ask a language model; returns its reply.",
               system_prompt: str | None = None, max_tokens: int = 1024,
               temperature: float = 0.0, timeout_s: float = 120.0, max_retries: int = 3,
               backoff_s: float = 1.0):
    headers = {}
    if api_key_env is not None:
      key = os.environ.get(api_key_env)
      if not key:
        raise ToolConfigError(f"llm tool {name!r}: environment variable {api_key_env} is not set "
                              "(export the endpoint's API key, or set api_key_env=None for an "
                              "open local server)")
      headers["Authorization"] = f"Bearer {key}"
    self.name, self.model, self.description = name, model, description
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.price_in, self.price_out = price_in_per_1m, price_out_per_1m
    self.system_prompt, self.max_tokens, self.temperature = system_prompt, max_tokens, temperature
    self.max_retries, self.backoff_s = max_retries, backoff_s
    self.parameters = {"type": "object", "additionalProperties": False, "required": ["prompt"],
                       "properties": {"prompt": {"type": "string",
                                                 "description": "what to ask the model"}}}
    self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers)

  async def run(self, args: dict[str, Any]) -> ToolResult:
    messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
    messages.append({"role": "user", "content": args["prompt"]})
    payload = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
               "temperature": self.temperature}
    body, error = await self._post(payload)
    if error:
      return ToolResult(text=f"Error: {self.name} failed: {error}", error=error)
    try:
      text = body["choices"][0]["message"]["content"] or ""
      usage = body.get("usage") or {}
      prompt_tokens = int(usage.get("prompt_tokens", 0))
      completion_tokens = int(usage.get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError, ValueError) as e:
      return ToolResult(text=f"Error: {self.name} returned a malformed response",
                        error=f"malformed response: {e!r}")
    cost = (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1e6
    return ToolResult(text=text, cost_usd=cost,
                      usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})

  async def _post(self, payload) -> tuple[dict | None, str | None]:
    """(response JSON, None) or (None, reason) after retries."""
    try:
      response = await post_with_retries(self._client, self.url, max_retries=self.max_retries,
                                         backoff_s=self.backoff_s, json=payload)
    except RequestFailed as e:
      if e.timed_out:
        return None, "timed out"
      return None, f"{self.url} {e.reason}" if e.reason.startswith("unreachable") else e.reason
    if response.status_code >= 400:
      return None, describe_error(response, self._client.headers)
    return response.json(), None
