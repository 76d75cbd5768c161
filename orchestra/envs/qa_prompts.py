"""The messages that pose one QA item to an orchestrator: the question, then how to answer."""

from __future__ import annotations

from orchestra.envs.qa import CHOICE, NUMERIC, QAItem

SYSTEM_PROMPT = "You are good at using tools."

TOOLS_INSTRUCTION = ("Use the tools to gather what you need, then call `answer` with the final "
                     "answer.")
NO_TOOLS_INSTRUCTION = "Think it through, then end your reply with a line 'Answer: <final answer>'."
ANSWER_HINTS = {CHOICE: "The final answer is the letter of the correct choice.",
                NUMERIC: "The final answer is a single number."}
DEFAULT_ANSWER_HINT = "The final answer is short: a name, a number or a few words."


def messages_for(item: QAItem, kind: str, system_prompt: str = SYSTEM_PROMPT
                 ) -> list[dict[str, str]]:
  """System + user messages for one item: the question, then how to answer."""
  hint = ANSWER_HINTS.get(item.grader, DEFAULT_ANSWER_HINT)
  how = NO_TOOLS_INSTRUCTION if kind == "no_tools" else TOOLS_INSTRUCTION
  messages = [{"role": "user", "content": f"{item.question.strip()}\n\n{how} {hint}"}]
  return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages
