"""The tools of a QA run: specs named on the command line or read from a JSON file, built."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestra.eval.qa_settings import BenchmarkError
from orchestra.tools.base import Tool, ToolConfigError
from orchestra.tools.registry import build_tool

SIMPLE_TOOLS = ("local_search", "code_interpreter", "web_search")


def load_tool_config(path: str) -> list[dict[str, Any]]:
  """Tool specs from a JSON file: `{"tools": [spec, ...]}` or a bare list of specs.

  A spec is what `orchestra.tools.build_tool` takes, e.g.
  {"type": "local_search", "index_dir": "indexes/wiki"} or {"type": "llm", "name": "expert-1",
  "model": "gpt-5-mini", "base_url": "https://api.openai.com/v1", "api_key_env":
  "OPENAI_API_KEY", "price_in_per_1m": 0.25, "price_out_per_1m": 2.0}.
  """
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except FileNotFoundError:
    raise BenchmarkError(f"tool config {path}: no such file") from None
  except json.JSONDecodeError as e:
    raise BenchmarkError(f"tool config {path}, line {e.lineno}: invalid JSON ({e.msg})") from None
  specs = config.get("tools") if isinstance(config, dict) else config
  if not isinstance(specs, list):
    raise BenchmarkError(f"tool config {path}: expected {{\"tools\": [...]}} or a list of tool "
                         "specs")
  for i, spec in enumerate(specs):
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
      raise BenchmarkError(f"tool config {path}: tools[{i}] must be an object with a \"type\"")
  return specs


def simple_tool_specs(names: Sequence[str], index_dir: str | None = None) -> list[dict[str, Any]]:
  """Specs of tools named on the command line (SIMPLE_TOOLS) with their default options."""
  specs = []
  for name in names:
    if name not in SIMPLE_TOOLS:
      raise BenchmarkError(f"--tools: unknown tool {name!r}; expected some of {list(SIMPLE_TOOLS)}"
                           " (use --tool_config for llm experts and custom options)")
    if name == "local_search":
      if not index_dir:
        raise BenchmarkError("--tools=local_search needs --index_dir (build one with "
                             "launch/build_index.py)")
      specs.append({"type": "local_search", "index_dir": index_dir})
    else:
      specs.append({"type": name})
  return specs


def build_tools(specs: Sequence[dict[str, Any]], with_answer: bool = True) -> dict[str, Tool]:
  """name -> Tool for every spec, plus `answer`; BenchmarkError naming the bad entry."""
  tools: dict[str, Tool] = {}
  for i, spec in enumerate(specs):
    try:
      tool = build_tool(spec)
    except ToolConfigError as e:
      raise BenchmarkError(f"tools[{i}] ({spec.get('type')}): {e}") from None
    if tool.name in tools or tool.name == "answer":
      raise BenchmarkError(f"tools[{i}]: a second tool named {tool.name!r}; give it a "
                           "different \"name\"")
    tools[tool.name] = tool
  if with_answer:
    tools["answer"] = build_tool({"type": "answer"})
  return tools
