"""The one interface every tool implements, and the registry that builds tools from config.

A tool is an async callable: `result = await tool(args)` where `args` is the
JSON object the model wrote. Tools never raise on bad model input: they
return a `ToolResult` whose `error` says what was wrong, so an episode keeps
going. Every result carries its dollar cost and its latency in seconds
(measured wall clock, or declared by a simulated tool).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any

_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "array": list, "object": dict}


class ToolConfigError(ValueError):
  """A tool spec that cannot be built; the message names the field and the fix."""


@dataclasses.dataclass
class ToolResult:
  text: str                              # the observation shown to the model
  cost_usd: float = 0.0
  latency_s: float = 0.0
  error: str | None = None               # None, or what went wrong (also shown in `text`)
  usage: dict[str, Any] = dataclasses.field(default_factory=dict)   # e.g. token counts
  final: bool = False                    # the `answer` tool ends the episode


class Tool(abc.ABC):
  """Base class: subclasses set `name`, `description`, `parameters` and implement `run`."""

  name: str
  description: str
  parameters: dict[str, Any]             # JSON schema of the arguments object

  def schema(self) -> dict[str, Any]:
    """The OpenAI function-tool schema shown to the model."""
    return {"type": "function", "function": {
        "name": self.name, "description": self.description, "parameters": self.parameters}}

  async def __call__(self, args: Any) -> ToolResult:
    """Validates `args` against `parameters`, runs the tool, and times it."""
    problem = validate_args(args, self.parameters)
    if problem:
      return ToolResult(text=f"Error: {problem}", error=problem)
    start = time.perf_counter()
    try:
      result = await self.run(args)
    except Exception as e:  # noqa: BLE001 - a tool failure is an observation, not a crash
      return ToolResult(text=f"Error: {self.name} failed: {type(e).__name__}: {e}",
                        error=f"{type(e).__name__}: {e}", latency_s=time.perf_counter() - start)
    if not result.latency_s:
      result.latency_s = time.perf_counter() - start
    return result

  @abc.abstractmethod
  async def run(self, args: dict[str, Any]) -> ToolResult:
    """Does the work for validated `args`."""


class Presented(Tool):
  """`tool` shown to the model with a shorter description and no per-argument descriptions.

  Small models have tight prompt budgets; the tool itself (validation, cost,
  latency) is unchanged.
  """

  def __init__(self, tool: Tool, description: str):
    self.tool, self.name, self.description = tool, tool.name, description
    properties = {k: {f: v for f, v in spec.items() if f != "description"}
                  for k, spec in tool.parameters.get("properties", {}).items()}
    self.parameters = {**tool.parameters, "properties": properties}

  async def __call__(self, args: Any) -> ToolResult:
    return await self.tool(args)

  async def run(self, args: dict[str, Any]) -> ToolResult:
    return await self.tool.run(args)


def validate_args(args: Any, schema: dict[str, Any]) -> str | None:
  """None if `args` fits the (flat) JSON schema, else a one-line reason."""
  if not isinstance(args, dict):
    return f"arguments must be a JSON object, got {type(args).__name__}"
  properties = schema.get("properties", {})
  missing = [k for k in schema.get("required", []) if k not in args]
  if missing:
    return f"missing required argument(s) {missing}"
  if schema.get("additionalProperties") is False:
    extra = sorted(set(args) - set(properties))
    if extra:
      return f"unknown argument(s) {extra}; expected {sorted(properties)}"
  for key, value in args.items():
    spec = properties.get(key, {})
    expected = _JSON_TYPES.get(spec.get("type"))
    if expected and (not isinstance(value, expected) or
                     (spec.get("type") in ("integer", "number") and isinstance(value, bool))):
      return f"argument {key!r} must be of type {spec['type']}, got {type(value).__name__}"
    if "enum" in spec and value not in spec["enum"]:
      return f"argument {key!r} must be one of {spec['enum']}, got {value!r}"
  return None


def build_from_spec(spec: dict[str, Any], types: dict[str, Any], what: str,
                    error: type[Exception]):
  """`types[spec["type"]](**the other keys of spec)`; `error` names `what` and the choices
  for an unknown type, and the constructor's complaint for a bad option."""
  options = dict(spec)
  kind = options.pop("type", None)
  if kind not in types:
    raise error(f"{what} type {kind!r} is unknown; expected one of {sorted(types)}")
  try:
    return types[kind](**options)
  except TypeError as e:
    raise error(f"{what} {kind!r}: {e}") from None
