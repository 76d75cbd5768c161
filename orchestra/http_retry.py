"""One POST with retries, shared by every HTTP client of the package.

Used by the rollout client (`orchestra.engines.http_engine`), the judge and user-simulator
endpoint (`orchestra.eval.judge.ChatEndpoint`) and the `llm` tool (`orchestra.tools.llm`):

  try k = 0..max_retries; before try k > 0 wait backoff_s * 2^(k-1) seconds.
  Retried:  connection failures (refused, reset, a connect timeout, a dropped response)
            and responses whose status is in `retry_status` (429/5xx by default).
  Not retried: a read timeout (the request may still be running on the server), and any
            other status, which the caller judges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import httpx

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RequestFailed(RuntimeError):
  """No usable response. `reason` says why (never the request body or headers);
  `timed_out` tells a read timeout from retries running out."""

  def __init__(self, reason: str, *, timed_out: bool = False):
    super().__init__(reason)
    self.reason, self.timed_out = reason, timed_out


async def post_with_retries(client: httpx.AsyncClient, url: str, *, max_retries: int,
                            backoff_s: float, retry_status: Collection[int] = RETRY_STATUS,
                            **request) -> httpx.Response:
  """`client.post(url, **request)` with the retries above; the last response otherwise.

  Raises `RequestFailed` after `max_retries + 1` failed tries ("unreachable after 3 tries
  (ConnectError)", "HTTP 503 after 3 tries") or at a read timeout.
  """
  reason, detail = "no attempt", ""
  for attempt in range(max_retries + 1):
    if attempt:
      await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    try:
      response = await client.post(url, **request)
    except httpx.TimeoutException as e:
      if not isinstance(e, httpx.ConnectTimeout):
        raise RequestFailed(f"timed out ({type(e).__name__})", timed_out=True) from None
      reason, detail = "unreachable", f" ({type(e).__name__})"
      continue
    except httpx.HTTPError as e:
      reason, detail = "unreachable", f" ({type(e).__name__})"
      continue
    if response.status_code in retry_status:
      reason, detail = f"HTTP {response.status_code}", ""      # no body: it may echo secrets
      continue
    return response
  raise RequestFailed(f"{reason} after {max_retries + 1} tries{detail}")


def describe_error(response: httpx.Response, headers: dict[str, str] | None = None,
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
