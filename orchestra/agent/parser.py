"""Tool-call parsing of a policy turn that never raises on malformed output.

A turn is text that may contain `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
blocks. Everything wrong with it (no call, an unterminated block, bad JSON,
a missing name, non-object arguments, an unknown tool, the same tool twice)
is reported in `errors`; the episode turns those into an error observation
and a format flag.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection
from typing import Any

from orchestra.agent.chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


@dataclasses.dataclass
class ToolCall:
  name: str
  arguments: dict[str, Any]


@dataclasses.dataclass
class ParsedTurn:
  content: str                                   # the text outside tool-call blocks
  calls: list[ToolCall]                          # well-formed calls to known tools
  errors: list[str]                              # what was malformed (empty if nothing)

  @property
  def valid(self) -> bool:
    return not self.errors and bool(self.calls)


def parse_turn(text: str, known_tools: Collection[str] | None = None,
               one_call_per_tool: bool = True) -> ParsedTurn:
  """Splits a turn into content and tool calls, collecting every format error.

  With `one_call_per_tool`, only the first call to each tool is kept
  (ToolOrchestra's rule); later duplicates are reported.
  """
  calls, errors, seen = [], [], set()
  for index, match in enumerate(_BLOCK.finditer(text)):
    call, error = _parse_block(match.group(1), known_tools)
    if error:
      errors.append(f"tool call {index + 1}: {error}")
    elif one_call_per_tool and call.name in seen:
      errors.append(f"tool call {index + 1}: {call.name!r} called twice in one turn; "
                    "only the first call is run")
    else:
      seen.add(call.name)
      calls.append(call)
  rest = _BLOCK.sub("", text)
  if TOOL_CALL_OPEN in rest:
    errors.append(f"unterminated {TOOL_CALL_OPEN} (missing {TOOL_CALL_CLOSE})")
    rest = rest[:rest.index(TOOL_CALL_OPEN)]
  if not calls and not errors:
    errors.append(f"no tool call: wrap one JSON call in {TOOL_CALL_OPEN}...{TOOL_CALL_CLOSE}")
  return ParsedTurn(content=rest.strip(), calls=calls, errors=errors)


def _parse_block(body: str, known_tools) -> tuple[ToolCall | None, str | None]:
  try:
    obj = json.loads(body.strip())
  except json.JSONDecodeError as e:
    return None, f"invalid JSON ({e.msg} at position {e.pos})"
  if not isinstance(obj, dict):
    return None, f"expected a JSON object, got {type(obj).__name__}"
  name = obj.get("name")
  if not isinstance(name, str) or not name:
    return None, 'missing "name"'
  arguments = obj.get("arguments", {})
  if isinstance(arguments, str):
    try:
      arguments = json.loads(arguments)
    except json.JSONDecodeError:
      return None, f'"arguments" of {name!r} is a string that is not JSON'
  if not isinstance(arguments, dict):
    return None, f'"arguments" of {name!r} must be an object'
  if known_tools is not None and name not in known_tools:
    return None, f"unknown tool {name!r}; available: {sorted(known_tools)}"
  return ToolCall(name, arguments), None
