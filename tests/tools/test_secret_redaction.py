"""An endpoint that echoes the API key in an error body never leaks it into results or prompts."""

import asyncio

import httpx

from orchestra.eval.judge import ChatEndpoint, ChatError
from orchestra.http_retry import describe_error
from orchestra.tools.llm import LLMTool

KEY = "sk-test-0123456789abcdef"


def echo_key(request: httpx.Request) -> httpx.Response:
  return httpx.Response(401, text=f"invalid key {request.headers['Authorization']}")


def test_describe_error_redacts_the_bearer_key():
  response = httpx.Response(401, text=f"bad key {KEY}!")
  text = describe_error(response, {"Authorization": f"Bearer {KEY}"})
  assert text == "HTTP 401: bad key [redacted]!"
  assert describe_error(response) == f"HTTP 401: bad key {KEY}!"      # nothing to redact


def test_llm_tool_observation_and_judge_error_hide_the_key(monkeypatch):
  monkeypatch.setenv("ECHO_KEY", KEY)
  tool = LLMTool("expert", "m", "http://127.0.0.1:9/v1", api_key_env="ECHO_KEY", max_retries=0)
  tool._client = httpx.AsyncClient(transport=httpx.MockTransport(echo_key),
                                   headers=tool._client.headers)
  result = asyncio.run(tool({"prompt": "hi"}))
  assert result.error and "HTTP 401" in result.text and KEY not in result.text
  assert "[redacted]" in result.text

  endpoint = ChatEndpoint("http://127.0.0.1:9/v1", "m", api_key_env="ECHO_KEY", max_retries=0,
                          transport=httpx.MockTransport(echo_key))

  async def ask():
    try:
      await endpoint.chat([{"role": "user", "content": "hi"}])
    except ChatError as e:
      return str(e)
    finally:
      await endpoint.aclose()

  message = asyncio.run(ask())
  assert "HTTP 401" in message and KEY not in message and "[redacted]" in message
