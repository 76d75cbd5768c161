"""llm tool error paths and web_search with a fake Tavily client."""

import asyncio
import time

import pytest

from orchestra.tools import ToolConfigError, build_tool


def test_llm_tool_missing_key_is_a_startup_error(monkeypatch):
  monkeypatch.delenv("ORCHESTRA_EXPERT_KEY", raising=False)
  with pytest.raises(ToolConfigError, match="ORCHESTRA_EXPERT_KEY is not set"):
    build_tool({"type": "llm", "name": "expert", "model": "m", "base_url": "http://127.0.0.1:1/v1",
                "api_key_env": "ORCHESTRA_EXPERT_KEY"})


def test_llm_tool_retries_then_reports_an_unreachable_endpoint():
  tool = build_tool({"type": "llm", "name": "expert", "model": "m",
                     "base_url": "http://127.0.0.1:1/v1", "max_retries": 2, "backoff_s": 0.01})
  start = time.perf_counter()
  result = asyncio.run(tool({"prompt": "hi"}))
  assert result.error and "unreachable" in result.error and "3 tries" in result.error
  assert result.text.startswith("Error:") and time.perf_counter() - start < 5


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
