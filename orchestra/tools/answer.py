"""`answer`: submits the final answer and ends the episode."""

from __future__ import annotations

from orchestra.tools.base import Tool, ToolResult


class Answer(Tool):
  """The terminal tool: its argument is graded; nothing is executed."""

  def __init__(self, name: str = "answer",
               description: str = "Submit the final answer to the task. This ends the episode."):
    self.name = name
    self.description = description
    self.parameters = {"type": "object", "additionalProperties": False, "required": ["answer"],
                       "properties": {"answer": {"type": "string",
                                                 "description": "the final answer, concise"}}}

  async def run(self, args) -> ToolResult:
    return ToolResult(text="Answer submitted.", final=True, latency_s=1e-9,
                      usage={"answer": args["answer"]})
