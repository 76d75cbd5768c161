"""tau2 natural-language assertions graded by the LLM judge of orchestra/eval/judge.py.

tau2's NL_ASSERTION criterion asks a judge model whether the agent met each expected
outcome, given the user/agent transcript, and counts the episode as passing only if every
outcome is met. `make_nl_judge(judge)` returns the async callable that
`orchestra.envs.domains.evaluate.evaluate_episode` takes as `nl_judge`; replies are cached
by `Judge.ask` like every other judge call.

The judge must reply with one JSON object:
  {"results": [{"expectedOutcome": ..., "reasoning": ..., "metExpectation": true|false}, ...]}
with one entry per assertion, in order. Anything else is a judge error (the component then
scores 0 and the reason is recorded), never a pass.
"""

from __future__ import annotations

from typing import Any, Optional

from orchestra.eval.judge import ChatError, Judge, yes_no

NL_SYSTEM = """TASK
- You will be given a list of expected outcomes and a conversation that was collected during a test case run.
- The conversation is between an agent and a customer.
- Your job is to evaluate whether the agent satisfies each of the expected outcomes.
- Grade each expected outcome individually.

FORMAT
- Your response should be a JSON object with the field `results`: a list with one entry per expected outcome, in the given order, each with
  - `expectedOutcome`: the expected outcome you are grading, repeated from the input
  - `reasoning`: a short explanation for your classification
  - `metExpectation`: `true` if the agent satisfies the expected outcome, `false` otherwise

Example response structure:
{"results": [{"expectedOutcome": "<an expected outcome>", "reasoning": "<reasoning>", "metExpectation": true}]}"""


def nl_messages(assertions: list[str], transcript: list[dict]) -> list[dict[str, str]]:
  """The judge prompt for one episode's assertions."""
  conversation = "\n".join(f"{m['role']}: {m['content']}" for m in transcript)
  outcomes = "\n".join(f"- {a}" for a in assertions)
  return [{"role": "system", "content": NL_SYSTEM},
          {"role": "user", "content": f"conversation:\n{conversation}\n\n"
                                      f"expectedOutcomes:\n{outcomes}"}]


def parse_nl_results(obj: Optional[dict[str, Any]], n: int) -> tuple[Optional[list[bool]], str]:
  """(met per assertion, "") from the judge's JSON object, or (None, why) if unusable."""
  if obj is None:
    return None, "no JSON object in the judge reply"
  results = obj.get("results")
  if not isinstance(results, list) or len(results) != n:
    return None, f"expected 'results' with {n} entries, got {results!r:.200}"
  met = []
  for entry in results:
    value = yes_no(entry.get("metExpectation")) if isinstance(entry, dict) else None
    if value is None:
      return None, f"entry without a true/false metExpectation: {entry!r:.200}"
    met.append(value)
  return met, ""


def make_nl_judge(judge: Judge):
  """The `nl_judge` callable for `evaluate_episode`: (met list | None, cost_usd, note)."""

  async def nl_judge(assertions: list[str], transcript: list[dict]):
    try:
      obj, reply = await judge.ask_json(nl_messages(assertions, transcript))
    except ChatError as e:
      return None, 0.0, f"judge request failed: {e}"
    met, why = parse_nl_results(obj, len(assertions))
    return met, reply.cost_usd, why or ("cached" if reply.cached else "")

  return nl_judge
