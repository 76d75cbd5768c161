"""llm tool error paths and web_search with a fake Tavily client."""

import asyncio

import httpx
import pytest
from sleeps_fixture import sleeps  # noqa: F401 (a fixture)

from orchestra.tools import ToolConfigError, build_tool


def test_llm_tool_missing_key_is_a_startup_error(monkeypatch):
  monkeypatch.delenv("ORCHESTRA_EXPERT_KEY", raising=False)
  with pytest.raises(ToolConfigError, match="ORCHESTRA_EXPERT_KEY is not set"):
    build_tool({"type": "llm", "name": "expert", "model": "m", "base_url": "http://127.0.0.1:1/v1",
                "api_key_env": "ORCHESTRA_EXPERT_KEY"})


def counting_transport(responses):
  """An httpx transport that counts requests and plays `responses` (an exception or a status)."""
  seen = []

  def handle(request):
    seen.append(request)
    outcome = responses[min(len(seen), len(responses)) - 1]
    if isinstance(outcome, Exception):
      raise outcome
    if outcome == 200:
      return httpx.Response(200, json={"choices": [{"message": {"content": "Trundle"}}],
                                       "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    return httpx.Response(outcome, text="busy")

  return httpx.MockTransport(handle), seen


def test_llm_tool_retries_then_reports_an_unreachable_endpoint(sleeps):
  """Nothing listens on port 1: three tries (max_retries=2), backing off 0.01 s then 0.02 s."""
  tool = build_tool({"type": "llm", "name": "expert", "model": "m",
                     "base_url": "http://127.0.0.1:1/v1", "max_retries": 2, "backoff_s": 0.01})
  result = asyncio.run(tool({"prompt": "hi"}))
  assert result.error and "unreachable" in result.error and "3 tries" in result.error
  assert result.text.startswith("Error:")
  assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize("failures, tries, error", [
    ([httpx.ConnectError("refused"), 503, 429, 200], 4, None),
    ([500, 500, 500, 500, 500], 4, "HTTP 500 after 4 tries"),
    ([400], 1, "HTTP 400: busy"),
])
def test_llm_tool_retries_exactly_as_its_policy_says(sleeps, failures, tries, error):
  """Connection errors, 429 and 5xx are retried up to max_retries=3; other errors are not."""
  tool = build_tool({"type": "llm", "name": "expert", "model": "m",
                     "base_url": "http://127.0.0.1:1/v1", "max_retries": 3, "backoff_s": 1.0})
  transport, seen = counting_transport(failures)
  assert isinstance(tool._client, httpx.AsyncClient)      # the client the transport replaces
  tool._client = httpx.AsyncClient(transport=transport)
  result = asyncio.run(tool({"prompt": "capital of Veloria?"}))
  assert len(seen) == tries and sleeps == [1.0, 2.0, 4.0][:tries - 1]
  assert result.error == error
  if error is None:
    assert result.text == "Trundle" and result.usage == {"prompt_tokens": 3,
                                                         "completion_tokens": 1}


def test_unknown_tool_type_and_bad_options_name_the_problem():
  with pytest.raises(ToolConfigError, match="tool type 'calculator' is unknown"):
    build_tool({"type": "calculator"})
  with pytest.raises(ToolConfigError, match="'answer'"):
    build_tool({"type": "answer", "colour": "red"})


class FakeTavily:
  def __init__(self):
    self.queries = []

  def search(self, query, max_results, search_depth):
    self.queries.append((query, max_results, search_depth))
    return {"results": [{"title": "Veloria", "url": "https://example.org/veloria",
                         "content": "Veloria is a fictional country. " * 50}]}


def test_web_search_formats_results_and_charges_per_call():
  fake = FakeTavily()
  tool = build_tool({"type": "web_search", "client": fake, "max_results": 3, "max_chars": 40})
  result = asyncio.run(tool({"query": "capital of Veloria"}))
  assert result.error is None and result.cost_usd == 0.01
  assert result.text.startswith("[1] Veloria\nhttps://example.org/veloria\nVeloria is")
  assert len(result.text.splitlines()[2]) == 40
  assert fake.queries == [("capital of Veloria", 3, "basic")]
  assert asyncio.run(tool({"query": "  "})).error == "empty query"


def test_web_search_missing_key_is_a_startup_error(monkeypatch):
  monkeypatch.delenv("TAVILY_API_KEY", raising=False)
  with pytest.raises(ToolConfigError, match="TAVILY_API_KEY is not set"):
    build_tool({"type": "web_search"})
