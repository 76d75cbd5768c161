"""Tools behind one async interface, with cost and latency accounting.

`build_tool({"type": ..., **options})` builds any registered tool; importing
this package registers all of them.
"""

from orchestra.tools import answer, code_interpreter, llm, local_search, web_search  # noqa: F401
from orchestra.tools.base import (Presented, Tool, ToolConfigError, ToolResult, build_tool,
                                  validate_args)

__all__ = ["Presented", "Tool", "ToolConfigError", "ToolResult", "build_tool", "validate_args"]
