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
flags.DEFINE_enum("orchestrator", "checkpoint", ["checkpoint", "chat", "no_tools"],
                  "checkpoint: our policy on vLLM/launch/serve.py (token-id episodes); chat: any "
                  "OpenAI-compatible model with tools; no_tools: that model answering directly")
flags.DEFINE_string("base_url", None, "orchestrator endpoint, e.g. http://127.0.0.1:8000/v1")
flags.DEFINE_string("model", None, "orchestrator model name as the endpoint serves it")
flags.DEFINE_string("api_key_env", None, "env variable with the orchestrator's API key "
                    "(none: an open server)")
flags.DEFINE_string("tokenizer", None, "checkpoint: the policy's HF tokenizer folder "
                    "(its model_dir)")
flags.DEFINE_float("price_in", 0.0, "orchestrator USD per 1M prompt tokens")
flags.DEFINE_float("price_out", 0.0, "orchestrator USD per 1M completion tokens")
flags.DEFINE_integer("max_tokens", 2048, "orchestrator tokens per turn")
flags.DEFINE_integer("max_total_tokens", 32_768, "checkpoint: prompt + all turns + observations")
flags.DEFINE_float("temperature", None, "orchestrator sampling temperature (default: 1.0 for "
                   "checkpoints, the endpoint's default for chat models)")
flags.DEFINE_string("label", None, "row name in reports (default: '<model> + tools')")
flags.DEFINE_list("tools", [], "tools by name: local_search, code_interpreter, web_search")
flags.DEFINE_string("tool_config", None, 'JSON tool specs ({"tools": [{"type": ...}, ...]}), '
                    "e.g. llm experts with prices; added to --tools")
flags.DEFINE_string("index_dir", None, "local_search index folder (launch/build_index.py)")
flags.DEFINE_integer("limit", 0, "evaluate the first N items (0: all)")
flags.DEFINE_integer("sample", 0, "evaluate N items sampled with --seed (0: all)")
flags.DEFINE_integer("seed", 0, "seed of --sample and of item i's sampling (seed + i)")
flags.DEFINE_integer("concurrency", 8, "items in flight at once")
flags.DEFINE_integer("max_turns", 30, "orchestrator turns per item")
flags.DEFINE_float("tool_timeout_s", 120.0, "a tool call slower than this is an error")
flags.DEFINE_bool("resume", True, "skip items already done in --out (--noresume: start over, "
                  "moving the old results aside)")
flags.DEFINE_bool("regrade", False, "grade the stored results again (judge replies cached)")
flags.DEFINE_bool("text_only", True, "HLE: skip (and count) rows with an image")
flags.DEFINE_string("judge_base_url", None, "LLM judge endpoint (none: rule-based grading)")
flags.DEFINE_string("judge_model", None, "LLM judge model name")
flags.DEFINE_string("judge_api_key_env", None, "env variable with the judge's API key")
flags.DEFINE_float("judge_price_in", 0.0, "judge USD per 1M prompt tokens")
flags.DEFINE_float("judge_price_out", 0.0, "judge USD per 1M completion tokens")
flags.DEFINE_integer("judge_max_tokens", 1024, "judge reply budget")
flags.DEFINE_float("judge_temperature", 0.0, "judge temperature (< 0: omit it, for reasoning "
                   "models that accept only their default)")
flags.DEFINE_string("judge_cache", None, "judge reply cache folder (default: OUT/judge_cache)")

# --- tau2 domains (orchestra/eval/tau2_cli.py) --------------------------------------------
flags.DEFINE_enum("domain", None, ["airline", "retail"], "tau2: the domain to run")
flags.DEFINE_string("split", None, "tau2: a split of split_tasks.json (train, test, base); "
                    "default: every task")
flags.DEFINE_list("task_ids", None, "tau2: only these task ids")
flags.DEFINE_integer("num_tasks", 0, "tau2: only the first N selected tasks (0: all)")
flags.DEFINE_bool("replay_gold", False, "tau2: replay the gold actions, write one JSON line "
                  "per task to --out")
flags.DEFINE_integer("num_trials", 1, "tau2: episodes per task (pass^k for k <= this)")
flags.DEFINE_integer("max_steps", 100, "tau2: messages per episode before it is cut")
flags.DEFINE_integer("max_errors", 10, "tau2: failed tool calls per episode before it is cut")
flags.DEFINE_integer("tau2_concurrency", 4, "tau2: episodes in flight at once")
flags.DEFINE_string("agent_url", None, "tau2: agent (orchestrator) endpoint, .../v1")
flags.DEFINE_string("agent_model", None, "tau2: agent model name")
flags.DEFINE_string("agent_api_key_env", None, "tau2: env variable with the agent's API key")
flags.DEFINE_float("agent_price_in", 0.0, "tau2: agent USD per 1M prompt tokens")
flags.DEFINE_float("agent_price_out", 0.0, "tau2: agent USD per 1M completion tokens")
flags.DEFINE_integer("agent_max_tokens", None, "tau2: agent tokens per reply")
flags.DEFINE_float("agent_temperature", 0.0, "tau2: agent temperature")
flags.DEFINE_string("user_url", None, "tau2: user simulator endpoint (default: the agent's)")
flags.DEFINE_string("user_model", None, "tau2: user simulator model (default: the agent's)")
flags.DEFINE_string("user_api_key_env", None, "tau2: env variable with the user model's key")
flags.DEFINE_float("user_price_in", 0.0, "tau2: user simulator USD per 1M prompt tokens")
flags.DEFINE_float("user_price_out", 0.0, "tau2: user simulator USD per 1M completion tokens")
flags.DEFINE_integer("user_max_tokens", None, "tau2: user simulator tokens per reply")
flags.DEFINE_float("user_temperature", 0.0, "tau2: user simulator temperature")
flags.DEFINE_string("tau2_judge_url", None, "tau2: NL-assertion judge endpoint, .../v1 "
                    "(default: --judge_base_url)")
flags.DEFINE_string("tau2_judge_model", None, "tau2: NL-assertion judge model (default: "
                    "--judge_model)")
flags.DEFINE_string("tau2_judge_api_key_env", None, "tau2: env variable with the judge's key")
flags.DEFINE_string("tau2_judge_cache", None, "tau2: folder caching judge replies")
flags.DEFINE_string("expert_url", None, "tau2: endpoint of the optional call_expert tool")
flags.DEFINE_string("expert_model", None, "tau2: call_expert model")
flags.DEFINE_string("expert_api_key_env", None, "tau2: env variable with the expert's key")
flags.DEFINE_float("expert_price_in", 0.0, "tau2: call_expert USD per 1M prompt tokens")
flags.DEFINE_float("expert_price_out", 0.0, "tau2: call_expert USD per 1M completion tokens")

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
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
