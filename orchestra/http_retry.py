"""One POST with retries, shared by every HTTP client of the package.

Used by the rollout client (`orchestra.engines.http_engine`, on an `aiohttp` session: its
per-request cost is a seventh of httpx's, which matters at hundreds of turns a second),
the judge and user-simulator endpoint (`orchestra.eval.judge.ChatEndpoint`) and the `llm`
tool (`orchestra.tools.llm`), both on `httpx`:

  try k = 0..max_retries; before try k > 0 wait backoff_s * 2^(k-1) seconds.
  Retried:  connection failures (refused, reset, a connect timeout, a dropped response)
            and responses whose status is in `retry_status` (429/5xx by default).
  Not retried: a read timeout (the request may still be running on the server), and any
            other status, which the caller judges.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Collection
from typing import Any

import aiohttp
import httpx

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RequestFailed(RuntimeError):
  """No usable response. `reason` says why (never the request body or headers);
  `timed_out` tells a read timeout from retries running out."""

  def __init__(self, reason: str, *, timed_out: bool = False):
    super().__init__(reason)
    self.reason, self.timed_out = reason, timed_out


@dataclasses.dataclass(frozen=True)
class Reply:
  """A whole response read off an `aiohttp` session (what httpx's `Response` gives)."""
  status_code: int
  text: str

  def json(self) -> Any:
    return json.loads(self.text)


class _Unreachable(Exception):
  """A try that failed to connect or lost its response: retried."""


async def post_with_retries(client: httpx.AsyncClient | aiohttp.ClientSession, url: str, *,
                            max_retries: int, backoff_s: float,
                            retry_status: Collection[int] = RETRY_STATUS,
                            **request) -> httpx.Response | Reply:
  """`client.post(url, **request)` with the retries above; the last response otherwise
  (an `httpx.Response`, or a `Reply` from an aiohttp session).

  Raises `RequestFailed` after `max_retries + 1` failed tries ("unreachable after 3 tries
  (ConnectError)", "HTTP 503 after 3 tries") or at a read timeout.
  """
  post = _aiohttp_post if isinstance(client, aiohttp.ClientSession) else _httpx_post
  reason, detail = "no attempt", ""
  for attempt in range(max_retries + 1):
    if attempt:
      await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    try:
      response = await post(client, url, request)
    except _Unreachable as e:
      reason, detail = "unreachable", f" ({e})"
      continue
    if response.status_code in retry_status:
      reason, detail = f"HTTP {response.status_code}", ""      # no body: it may echo secrets
      continue
    return response
  raise RequestFailed(f"{reason} after {max_retries + 1} tries{detail}")


async def _httpx_post(client: httpx.AsyncClient, url: str, request: dict) -> httpx.Response:
  try:
    return await client.post(url, **request)
  except httpx.TimeoutException as e:
    if not isinstance(e, httpx.ConnectTimeout):
      raise RequestFailed(f"timed out ({type(e).__name__})", timed_out=True) from None
    raise _Unreachable(type(e).__name__) from None
  except httpx.HTTPError as e:
    raise _Unreachable(type(e).__name__) from None


async def _aiohttp_post(client: aiohttp.ClientSession, url: str, request: dict) -> Reply:
  try:
    async with client.post(url, **request) as response:
      return Reply(response.status, await response.text())
  except aiohttp.ConnectionTimeoutError as e:
    raise _Unreachable(type(e).__name__) from None
  except (TimeoutError, asyncio.TimeoutError) as e:
    raise RequestFailed(f"timed out ({type(e).__name__})", timed_out=True) from None
  except aiohttp.ClientError as e:
    raise _Unreachable(type(e).__name__) from None


def describe_error(response: httpx.Response | Reply, headers: dict[str, str] | None = None,
                   limit: int = 300) -> str:
  """'HTTP 401: <body>' for an error response, with the request's bearer key redacted.

  Error bodies end up in results files, logs and the orchestrator's observations; a
  provider that echoes the key it was sent must not leak it there.
  """
  text = response.text[:limit]
  auth = (headers or {}).get("Authorization", "")
  key = auth.removeprefix("Bearer ").strip()
  if len(key) >= 4:
    text = text.replace(key, "[redacted]")
  return f"HTTP {response.status_code}: {text}"
