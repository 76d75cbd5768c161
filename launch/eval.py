"""Evaluate orchestrators: the main job's preference eval, QA benchmarks, tau2 domains.

  # the main job: a run's policies and baselines under the config's preference vectors
  python launch/eval.py --config configs/tiny_cpu.py --workdir runs/tiny
  # a run trained on a tau2-format domain: its rl and sft policies on the test split
  python launch/eval.py --config configs/tau2_retail_cpu.py --workdir runs/retail
  # a QA benchmark (HLE, FRAMES, GSM8K or generic JSONL): see orchestra/eval/qa_cli.py
  python launch/eval.py --benchmark gsm8k --data gsm8k_test.jsonl --dry_run
  # a tau2-style domain: see orchestra/eval/tau2_cli.py
  python launch/eval.py --benchmark tau2 --domain airline --data ../shared/data/tau2 \
      --replay_gold --out gold.jsonl

Without --benchmark it writes WORKDIR/eval/report.json (one row per policy x
preference), report.md and pareto.png (accuracy vs cost), and prints the table.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from orchestra.eval.qa_settings import JUDGE_PREFIX, JudgeSpec, OrchestratorSpec, RunSettings
from orchestra.eval.settings_flags import define_flags
from orchestra.eval.tau2_cli import Tau2Settings

# --- the main job's preference eval -------------------------------------------------------
config_flags.DEFINE_config_file("config", None, "the run's configs/*.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "the run folder written by launch/train.py")
flags.DEFINE_list("policies", None, "subset of rl,sft,random,cheapest,strongest (default: config)")

# --- shared by the benchmarks -------------------------------------------------------------
flags.DEFINE_enum("benchmark", None, ["hle", "frames", "gsm8k", "jsonl", "tau2"],
                  "evaluate on a benchmark instead of the main job's preference eval")
flags.DEFINE_string("data", None, "benchmark data: a file (QA) or the tau2 data folder")
flags.DEFINE_bool("dry_run", False, "load and validate data and settings, print counts, exit")
flags.DEFINE_string("out", None, "output: a folder (QA runs) or a file (tau2 --replay_gold)")

# --- QA benchmarks (orchestra/eval/qa_cli.py) ---------------------------------------------
define_flags(OrchestratorSpec)             # --orchestrator, --base_url, --model, --price_in, ...
define_flags(RunSettings)                  # --max_turns, --max_total_tokens, --concurrency, ...
flags.DEFINE_list("tools", [], "tools by name: local_search, code_interpreter, web_search")
flags.DEFINE_string("tool_config", None, 'JSON tool specs ({"tools": [{"type": ...}, ...]}), '
                    "e.g. llm experts with prices; added to --tools")
flags.DEFINE_string("index_dir", None, "local_search index folder (launch/build_index.py)")
flags.DEFINE_integer("limit", 0, "evaluate the first N items (0: all)")
flags.DEFINE_integer("sample", 0, "evaluate N items sampled with --seed (0: all)")
flags.DEFINE_bool("resume", True, "skip items already done in --out (--noresume: start over, "
                  "moving the old results aside)")
flags.DEFINE_bool("regrade", False, "grade the stored results again (judge replies cached)")
flags.DEFINE_bool("text_only", True, "HLE: skip (and count) rows with an image")
define_flags(JudgeSpec, JUDGE_PREFIX)      # --judge_base_url, --judge_model, ...

# --- tau2 domains (orchestra/eval/tau2_cli.py) --------------------------------------------
define_flags(Tau2Settings)                 # --domain, --split, --agent_url, --user_url, ...

FLAGS = flags.FLAGS


def preference_eval():
  if FLAGS.config is None or not FLAGS.workdir:
    raise app.UsageError("--config and --workdir are required (or --benchmark ...)")
  from orchestra.checkpoint import CheckpointError
  from orchestra.eval.preference_eval import PolicyChoiceError, evaluate, write_report
  from orchestra.train.setup import build_setup
  from orchestra.train.setup_base import ConfigValueError

  try:
    setup = build_setup(FLAGS.config, FLAGS.workdir)
    rows = evaluate(setup, FLAGS.workdir, policies=FLAGS.policies)
  except (ConfigValueError, CheckpointError, PolicyChoiceError) as e:
    raise app.UsageError(str(e)) from None
  paths = write_report(rows, os.path.join(FLAGS.workdir, "eval"))
  with open(paths["md"]) as f:
    print(f.read())
  print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")


def main(argv):
  del argv
  if FLAGS.benchmark is None:
    return preference_eval()
  if FLAGS.benchmark == "tau2":
    from orchestra.eval.tau2_cli import main as run
  else:
    from orchestra.eval.qa_cli import main as run
  return run(FLAGS)


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  from orchestra.train.cli import define_compilation_cache_flag, parse_flags
  define_compilation_cache_flag()
  app.run(main, flags_parser=parse_flags)
