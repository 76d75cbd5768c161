"""`build_tool`: a tool from its config spec, through one explicit table of tool types."""

from __future__ import annotations

from typing import Any

from orchestra.tools.answer import Answer
from orchestra.tools.base import Tool, ToolConfigError, build_from_spec
from orchestra.tools.code_interpreter import CodeInterpreter
from orchestra.tools.llm import LLMTool
from orchestra.tools.local_search import LocalSearch
from orchestra.tools.web_search import WebSearch

TOOL_TYPES: dict[str, type[Tool]] = {
    "answer": Answer,
    "code_interpreter": CodeInterpreter,
    "llm": LLMTool,
    "local_search": LocalSearch,
    "web_search": WebSearch,
}


def build_tool(spec: dict[str, Any]) -> Tool:
  """Builds a tool from a config dict: `{"type": ..., **constructor options}`, where the
  type is a key of `TOOL_TYPES`; ToolConfigError names an unknown type or a bad option."""
  return build_from_spec(spec, TOOL_TYPES, "tool", ToolConfigError)
