"""One item's record: its grade (rules, or the judge when there is one) and its results.jsonl
line; and the stored records of a selection of items."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from orchestra.envs.qa import QAItem
from orchestra.envs.qa_graders import grade
from orchestra.eval.judge import Judge, Verdict
from orchestra.eval.orchestrators import Outcome, cut
from orchestra.eval.results_store import ResultsStore


async def grade_item(item: QAItem, outcome: Outcome, judge: Judge | None
                     ) -> tuple[bool, dict[str, Any], Verdict | None]:
  """(correct, rule grade, judge verdict): the judge decides when there is one."""
  rule = grade(item.grader, outcome.answer, item.answer, item.aliases)
  rule_dict = dataclasses.asdict(rule)
  if judge is None:
    return rule.correct, rule_dict, None
  verdict = await judge.judge_qa(item.question, item.answer, outcome.answer)
  return bool(verdict.correct), rule_dict, verdict


def verdict_record(verdict: Verdict | None) -> dict[str, Any] | None:
  """The `judge` field of a record (None without a judge)."""
  if verdict is None:
    return None
  return {"correct": verdict.correct, "extracted_answer": verdict.extracted_answer,
          "reasoning": verdict.reasoning, "error": verdict.error, "cost_usd": verdict.cost_usd,
          "cached": verdict.cached, "raw": cut(verdict.raw, 1000)}


def make_record(item: QAItem, outcome: Outcome, seed: int, correct: bool,
                rule: dict[str, Any], verdict: Verdict | None) -> dict[str, Any]:
  """The results.jsonl line of one item."""
  return {
      "id": item.id, "status": "error" if outcome.error else "done",
      "categories": list(item.categories), "question": item.question, "gold": item.answer,
      "aliases": list(item.aliases), "prediction": outcome.answer, "correct": bool(correct),
      "rule_grade": rule, "judge": verdict_record(verdict),
      "judge_error": bool(verdict is not None and verdict.judge_error),
      "cost_usd": outcome.cost_usd, "latency_s": outcome.latency_s, "turns": outcome.turns,
      "tool_calls": outcome.tool_calls, "finish_reason": outcome.finish_reason,
      "format_errors": outcome.format_errors, "error": outcome.error, "seed": seed,
      "transcript": outcome.transcript,
  }


def selected_records(items: Sequence[QAItem], store: ResultsStore) -> list[dict[str, Any]]:
  """The stored record of each selected item that has one, in item order."""
  records = store.load()
  return [records[item.id] for item in items if item.id in records]

