"""`launch/eval.py --benchmark hle|frames|gsm8k|jsonl`: QA benchmarks from the command line.

  # validate the data (and any tool/endpoint settings given), print counts, call no model
  python launch/eval.py --benchmark hle --data ../shared/data/benchmarks/hle_500.json --dry_run
  # one of our checkpoints served by launch/serve.py or vLLM, with tools
  python launch/eval.py --benchmark frames --data frames.json --orchestrator checkpoint \\
      --base_url http://127.0.0.1:8000 --model policy --tokenizer /ckpt/hf \\
      --tools local_search,code_interpreter --index_dir indexes/wiki --out runs/frames-policy
  # any OpenAI-compatible model as a prompted orchestrator (the paper's "GPT-5 + tools" rows)
  python launch/eval.py --benchmark hle --data hle.json --orchestrator chat \\
      --base_url https://api.openai.com/v1 --model gpt-5 --api_key_env OPENAI_API_KEY \\
      --price_in 1.25 --price_out 10 --tool_config tools.json \\
      --judge_base_url https://api.openai.com/v1 --judge_model gpt-5-mini \\
      --judge_api_key_env OPENAI_API_KEY --judge_temperature -1 --out runs/hle-gpt5

The run folder (--out) gets results.jsonl (one line per finished item, so an interrupted run
resumes where it stopped when started again with the same settings), run.json (the pinned
setup), report.json and report.md. `launch/compare.py` puts several run folders in one table.

`--dry_run` prints one JSON object on its last line:
{"benchmark", "n_items", "n_skipped", "by_category", ...}; a bad data row ends the command
with status 1 and a message naming the file and line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from absl import app

from orchestra.eval.qa_settings import (JUDGE_PREFIX, BenchmarkError, JudgeSpec,
                                        OrchestratorSpec, RunSettings)
from orchestra.eval.settings_flags import from_flags


def _fail(message: str) -> None:
  """Ends the command with one line on stderr and exit status 1 (no traceback)."""
  print(f"eval.py: error: {message}", file=sys.stderr)
  sys.exit(1)


def _orchestrator_spec(FLAGS):
  """The OrchestratorSpec the flags describe, or None when no endpoint is given (dry runs)."""
  if not FLAGS.base_url and not FLAGS.model:
    return None
  return from_flags(OrchestratorSpec, FLAGS)


def _judge_spec(FLAGS):
  if not FLAGS.judge_base_url and not FLAGS.judge_model:
    return None
  if not FLAGS.judge_base_url or not FLAGS.judge_model:
    raise app.UsageError("an LLM judge needs both --judge_base_url and --judge_model")
  return from_flags(JudgeSpec, FLAGS, JUDGE_PREFIX)


def _tool_specs(FLAGS, kind: str | None) -> list[dict[str, Any]]:
  from orchestra.eval.qa_tools import load_tool_config, simple_tool_specs
  if kind == "no_tools":
    if FLAGS.tools or FLAGS.tool_config:
      raise app.UsageError("--orchestrator=no_tools runs without tools; drop --tools and "
                           "--tool_config")
    return []
  specs = simple_tool_specs(FLAGS.tools or [], FLAGS.index_dir)
  if FLAGS.tool_config:
    specs += load_tool_config(FLAGS.tool_config)
  return specs


def _check_numbers(FLAGS) -> None:
  for name, low in (("limit", 0), ("sample", 0), ("concurrency", 1), ("max_turns", 1),
                    ("max_tokens", 1), ("max_total_tokens", 1), ("judge_max_tokens", 1)):
    value = getattr(FLAGS, name)
    if value < low:
      raise app.UsageError(f"--{name}={value} must be >= {low}")
  for name in ("price_in", "price_out", "judge_price_in", "judge_price_out"):
    if getattr(FLAGS, name) < 0:
      raise app.UsageError(f"--{name}={getattr(FLAGS, name)} must be >= 0 (USD per 1M tokens)")
  if FLAGS.limit and FLAGS.sample:
    raise app.UsageError("give --limit (the first N items) or --sample (N random items), not both")
  if FLAGS.regrade and not FLAGS.resume:
    raise app.UsageError("--regrade grades the results already in --out; drop --noresume")
  if FLAGS.tool_timeout_s <= 0:
    raise app.UsageError(f"--tool_timeout_s={FLAGS.tool_timeout_s} must be > 0")


def _fresh_start(out_dir: str) -> None:
  """--noresume: moves an earlier run's results and pin aside (nothing is deleted)."""
  from orchestra.eval.results_store import RESULTS_FILE, RUN_FILE
  stamp = time.strftime("%Y%m%d-%H%M%S")
  for name in (RESULTS_FILE, RUN_FILE):
    path = os.path.join(out_dir, name)
    if os.path.exists(path):
      os.replace(path, f"{path}.old-{stamp}")
      print(f"--noresume: moved {path} to {path}.old-{stamp}", file=sys.stderr)


def main(FLAGS) -> int:
  """Runs (or dry-runs) the QA benchmark FLAGS.benchmark; returns the exit status."""
  logging.getLogger("faiss").setLevel(logging.WARNING)   # its loader logs every CPU probe
  from orchestra.envs.qa import QADataError, load_benchmark
  from orchestra.eval.orchestrators import build_orchestrator, chat_endpoint
  from orchestra.eval.qa_run import dry_run_summary, run_benchmark, select_items
  from orchestra.eval.qa_tools import build_tools
  if not FLAGS.data:
    raise app.UsageError(f"--benchmark={FLAGS.benchmark} needs --data, the benchmark file "
                         "(a JSON array or JSON Lines)")
  _check_numbers(FLAGS)
  try:
    qa_set = load_benchmark(FLAGS.benchmark, FLAGS.data, text_only=FLAGS.text_only)
  except QADataError as e:
    _fail(str(e))
  if not qa_set.items:
    _fail(f"{FLAGS.data}: no items to evaluate ({qa_set.n_skipped} skipped: {qa_set.skipped})")
  n = FLAGS.sample or FLAGS.limit
  items = select_items(qa_set.items, n, FLAGS.seed if FLAGS.sample else None)

  spec = _orchestrator_spec(FLAGS)
  judge = _judge_spec(FLAGS)
  settings = from_flags(RunSettings, FLAGS)
  try:
    tools = build_tools(_tool_specs(FLAGS, FLAGS.orchestrator),
                        with_answer=FLAGS.orchestrator != "no_tools")
    if FLAGS.dry_run:
      if spec is not None:                 # validates endpoint, key and tokenizer; sends nothing
        orchestrator = build_orchestrator(spec, tools, settings)
        asyncio.run(orchestrator.aclose())
      if judge is not None:                # checks URL and key; no cache folder is made
        chat_endpoint(judge, JUDGE_PREFIX)
      summary = dry_run_summary(FLAGS.benchmark, qa_set, items, tools, spec, judge)
      print(json.dumps(summary, ensure_ascii=False))
      return 0
    if spec is None:
      raise app.UsageError("a run needs --base_url and --model (the orchestrator's endpoint); "
                           "add --dry_run to only validate the data")
    if not FLAGS.out:
      raise app.UsageError("a run needs --out, the run folder (results.jsonl, report.json, "
                           "report.md); rerun with the same --out to resume")
    if not FLAGS.resume:
      _fresh_start(FLAGS.out)

    def progress(line: str) -> None:
      print(line, flush=True)

    counts, summary, paths = asyncio.run(run_benchmark(
        FLAGS.benchmark, qa_set, items, spec, tools, settings, FLAGS.out, judge,
        regrade_only=FLAGS.regrade, progress=progress))
  except BenchmarkError as e:
    _fail(str(e))
  with open(paths["md"], encoding="utf-8") as f:
    print(f.read())
  print(f"ran {counts.n_ran} items, {counts.n_resumed} already done (resumed); "
        f"wrote {paths['json']} and {paths['md']}")
  if summary["n_errors"]:
    print(f"{summary['n_errors']} items failed on an endpoint error; run the same command again "
          "to retry them", file=sys.stderr)
  return 0
