"""A whole QA run: select items, run the ones not done (resumably), grade, record, report.

Items whose id already has a `done` record are skipped; items that failed on an endpoint
error (`status: error`) are run again. `--dry_run` validates the same setup and prints
`dry_run_summary` instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from orchestra.envs.qa import QAItem
from orchestra.eval.judge import Judge
from orchestra.eval.orchestrators import (Outcome, build_orchestrator, chat_endpoint,
                                          check_reachable)
from orchestra.envs.qa_prompts import messages_for
from orchestra.eval.qa_records import grade_item, make_record, selected_records, verdict_record
from orchestra.eval.qa_settings import (JUDGE_PREFIX, BenchmarkError, JudgeSpec,
                                        OrchestratorSpec, RunSettings)
from orchestra.eval.results_store import ResultsStore, file_sha256, pin_run
from orchestra.tools.base import Tool


def select_items(items: Sequence[QAItem], limit: int = 0, sample_seed: int | None = None
                 ) -> list[QAItem]:
  """The first `limit` items (0: all), or a seeded random sample of `limit` (file order kept)."""
  if limit < 0:
    raise BenchmarkError(f"--limit={limit} must be >= 0 (0 = every item)")
  if not limit or limit >= len(items):
    return list(items)
  if sample_seed is None:
    return list(items[:limit])
  chosen = sorted(random.Random(sample_seed).sample(range(len(items)), limit))
  return [items[i] for i in chosen]


@dataclasses.dataclass
class RunCounts:
  n_selected: int
  n_resumed: int                           # already done before this run
  n_ran: int                               # run now


async def run_items(items: Sequence[QAItem], orchestrator, store: ResultsStore,
                    settings: RunSettings, *, kind: str, judge: Judge | None = None,
                    progress: Callable[[str], None] | None = None) -> RunCounts:
  """Runs every item of `items` without a `done` record in `store`; appends each result."""
  done = {k for k, r in store.load().items() if r.get("status") == "done"}
  todo = [(i, item) for i, item in enumerate(items) if item.id not in done]
  counts = RunCounts(len(items), len(items) - len(todo), 0)
  gate = asyncio.Semaphore(max(1, settings.concurrency))

  async def one(index: int, item: QAItem):
    seed = settings.seed + index
    async with gate:
      outcome = await orchestrator.solve(messages_for(item, kind, settings.system_prompt), seed)
      correct, rule, verdict = await grade_item(item, outcome, judge)
    record = make_record(item, outcome, seed, correct, rule, verdict)
    store.append(record)
    counts.n_ran += 1
    if progress:
      status = "ERROR " + str(outcome.error)[:120] if outcome.error else (
          "correct" if correct else "wrong")
      progress(f"[{counts.n_resumed + counts.n_ran}/{counts.n_selected}] {item.id}: {status}, "
               f"{outcome.turns} turns, ${outcome.cost_usd:.5f}, {outcome.latency_s:.1f}s, "
               f"calls {outcome.tool_calls}")

  await asyncio.gather(*(one(i, item) for i, item in todo))
  return counts


async def regrade(items: Sequence[QAItem], store: ResultsStore, judge: Judge | None) -> int:
  """Grades every stored record again (judge replies come from its cache); returns how many."""
  by_id = {item.id: item for item in items}
  records = list(store.load().values())
  n = 0
  for record in records:
    item = by_id.get(record["id"])
    if item is None or record.get("status") != "done":
      continue
    outcome = Outcome(answer=record.get("prediction"), finish_reason=record["finish_reason"])
    correct, rule, verdict = await grade_item(item, outcome, judge)
    record.update(correct=correct, rule_grade=rule, judge=verdict_record(verdict),
                  judge_error=bool(verdict is not None and verdict.judge_error))
    n += 1
  store.rewrite(records)
  return n


def build_judge(spec: JudgeSpec, out_dir: str) -> Judge:
  """The `Judge` of `spec` (validated; nothing is sent); a temperature < 0 is left out."""
  temperature = None if spec.temperature is None or spec.temperature < 0 else spec.temperature
  return Judge(chat_endpoint(spec, JUDGE_PREFIX),
               spec.cache_dir or os.path.join(out_dir, "judge_cache"),
               max_tokens=spec.max_tokens, temperature=temperature)


def run_setup(benchmark: str, data_path: str, spec: OrchestratorSpec,
              tools: dict[str, Tool], judge: JudgeSpec | None) -> dict[str, Any]:
  """What run.json pins and report.json repeats (no secrets: key *names* only)."""
  return {"benchmark": benchmark, "label": spec.default_label(),
          "data": os.path.abspath(data_path), "data_sha256": file_sha256(data_path),
          "orchestrator": {"kind": spec.kind, "model": spec.model,
                           "base_url": spec.base_url},
          "orchestrator_price_per_1m": [spec.price_in_per_1m, spec.price_out_per_1m],
          "tools": sorted(tools),
          "grader": f"judge:{judge.model}" if judge else "rules"}


def dry_run_summary(benchmark: str, qa_set, items: Sequence[QAItem],
                    tools: dict[str, Tool] | None, spec: OrchestratorSpec | None,
                    judge: JudgeSpec | None) -> dict[str, Any]:
  """The JSON line `launch/eval.py --dry_run` prints."""
  from orchestra.envs.qa import by_category
  return {"benchmark": benchmark, "n_items": len(items), "n_skipped": qa_set.n_skipped,
          "by_category": by_category(list(items)), "n_loaded": len(qa_set.items),
          "skipped": qa_set.skipped, "data": os.path.abspath(qa_set.path),
          "tools": sorted(tools or {}),
          "orchestrator": None if spec is None else {"kind": spec.kind, "model": spec.model},
          "grader": f"judge:{judge.model}" if judge else "rules"}


async def run_benchmark(benchmark: str, qa_set, items: Sequence[QAItem],
                        spec: OrchestratorSpec, tools: dict[str, Tool], settings: RunSettings,
                        out_dir: str, judge_spec: JudgeSpec | None = None, *,
                        regrade_only: bool = False,
                        progress: Callable[[str], None] | None = None
                        ) -> tuple[RunCounts, dict[str, Any], dict[str, str]]:
  """Runs (or, with `regrade_only`, re-grades) `items`, then writes report.json/report.md.

  Returns (counts, the report summary, the report paths).
  """
  from orchestra.eval.report import summarize, write_report
  setup = run_setup(benchmark, qa_set.path, spec, tools, judge_spec)
  # Everything is validated before run.json pins the setup, so a typo is not pinned.
  judge = build_judge(judge_spec, out_dir) if judge_spec else None
  orchestrator = None if regrade_only else build_orchestrator(spec, tools, settings)
  try:
    pin_run(out_dir, setup, ignore=("grader",) if regrade_only else ())
    store = ResultsStore(out_dir)
    if regrade_only:
      n = await regrade(items, store, judge)
      counts = RunCounts(len(items), n, 0)
    else:
      done = {k for k, r in store.load().items() if r.get("status") == "done"}
      if any(item.id not in done for item in items):
        await check_reachable(orchestrator.models_url, spec.api_key_env)
      counts = await run_items(items, orchestrator, store, settings, kind=spec.kind,
                               judge=judge, progress=progress)
  finally:
    if orchestrator is not None:
      await orchestrator.aclose()
    if judge is not None:
      await judge.aclose()
  summary = summarize(selected_records(items, store), setup)
  summary.update(n_selected=len(items), n_ran=counts.n_ran, n_resumed=counts.n_resumed,
                 n_missing=len(items) - summary["n"])
  return counts, summary, write_report(summary, out_dir)
