"""Qwen3-style chat format with tools, as text and as a tokenizer `chat_template`.

    <|im_start|>system
    {system}

    # Tools
    ... <tools>{one JSON schema per line}</tools> ... <tool_call></tool_call> instructions<|im_end|>
    <|im_start|>user
    {task}<|im_end|>
    <|im_start|>assistant
    {reasoning}<tool_call>
    {"name": "search", "arguments": {"query": "..."}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    {observation}
    </tool_response><|im_end|>
    <|im_start|>assistant
    ...

`CHAT_TEMPLATE` is the same format in Jinja: set it as a tokenizer's
`chat_template` and `apply_chat_template(messages, tools=...,
add_generation_prompt=True)` renders exactly `render_prompt(messages, tools)`.
During an episode earlier turns are never re-rendered: each observation is
appended as `observation_text(...)` tokens after the policy's own tokens.
"""

from __future__ import annotations

import json
from typing import Any

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
SPECIAL_TOKENS = (IM_START, IM_END, TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN,
                  TOOL_RESPONSE_CLOSE)

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def _system_block(system: str | None, tools: list[dict] | None) -> str:
  if not tools:
    return f"{IM_START}system\n{system}{IM_END}\n" if system is not None else ""
  lead = f"{system}\n\n" if system is not None else ""
  schemas = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
  return f"{IM_START}system\n{lead}{_TOOLS_HEADER}{schemas}{_TOOLS_FOOTER}{IM_END}\n"


def tool_call_text(name: str, arguments: dict[str, Any] | str) -> str:
  """`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (arguments kept verbatim if text)."""
  args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
  return f'{TOOL_CALL_OPEN}\n{{"name": "{name}", "arguments": {args}}}\n{TOOL_CALL_CLOSE}'


def render_prompt(messages: list[dict[str, Any]], tools: list[dict] | None = None,
                  add_generation_prompt: bool = True) -> str:
  """The conversation as text (system/user/assistant/tool messages, OpenAI shapes)."""
  system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
  parts = [_system_block(system, tools)]
  for i, m in enumerate(messages):
    role = m["role"]
    if role == "system" and i == 0:
      continue
    if role in ("user", "system"):
      parts.append(f"{IM_START}{role}\n{m['content']}{IM_END}\n")
    elif role == "assistant":
      calls = "".join(tool_call_text(c["function"]["name"], c["function"]["arguments"])
                      for c in m.get("tool_calls") or [])
      parts.append(f"{IM_START}assistant\n{m.get('content') or ''}{calls}{IM_END}\n")
    elif role == "tool":
      parts.append(f"{IM_START}user\n{TOOL_RESPONSE_OPEN}\n{m['content']}\n"
                   f"{TOOL_RESPONSE_CLOSE}{IM_END}\n")
    else:
      raise ValueError(f"message {i}: unknown role {role!r}")
  if add_generation_prompt:
    parts.append(f"{IM_START}assistant\n")
  return "".join(parts)


def observation_text(observation: str) -> str:
  """What follows the policy's `<|im_end|>`: the tool response and the next assistant header."""
  return (f"\n{IM_START}user\n{TOOL_RESPONSE_OPEN}\n{observation}\n{TOOL_RESPONSE_CLOSE}"
          f"{IM_END}\n{IM_START}assistant\n")


# The same format for `tokenizer.chat_template` (Jinja, as transformers renders it).
# Every literal is an explicit `{{- '...' }}` so layout whitespace never leaks in.
CHAT_TEMPLATE = (
    "{%- set system = messages[0].content if messages and messages[0].role == 'system' "
    "else none %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if system is not none %}{{- system + '\\n\\n' }}{%- endif %}"
    "{{- " + repr(_TOOLS_HEADER).replace("\n", "\\n") + " }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- " + repr(_TOOLS_FOOTER).replace("\n", "\\n") + " + '<|im_end|>\\n' }}"
    "{%- elif system is not none %}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'system' and loop.first %}"
    "{%- elif m.role in ('user', 'system') %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' + (m.content or '') }}"
    "{%- for c in m.tool_calls or [] %}"
    "{%- set args = c.function.arguments %}"
    "{{- '<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' }}"
    "{{- args if args is string else (args | tojson) }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + "
    "'\\n</tool_response><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
