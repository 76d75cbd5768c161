"""Tools behind one async interface, with cost and latency accounting.

`build_tool({"type": ..., **options})` builds any tool of `registry.TOOL_TYPES`.
"""

from orchestra.tools.base import Presented, Tool, ToolConfigError, ToolResult, validate_args
from orchestra.tools.registry import TOOL_TYPES, build_tool

__all__ = ["TOOL_TYPES", "Presented", "Tool", "ToolConfigError", "ToolResult", "build_tool",
           "validate_args"]
