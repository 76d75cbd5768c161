"""Put several benchmark runs in one paper-style table and an accuracy-vs-cost plot.

  python launch/compare.py runs/hle-policy runs/frames-policy runs/hle-gpt5 runs/frames-gpt5 \
      --out runs/compare [--labels "Ours-8B,Ours-8B,GPT-5 + tools,GPT-5 + tools"]

Each argument is a run folder written by `launch/eval.py --benchmark ... --out DIR` (its
report.json). Runs with the same label form one row (one column per benchmark, with the
accuracy's 95% Wilson interval and n; cost in US cents and latency in minutes per task,
averaged over the row's benchmarks). Writes OUT/comparison.md, OUT/comparison.json and
OUT/accuracy_vs_cost.png, and prints the table.
"""

import json
import os
import sys

from absl import app, flags

flags.DEFINE_string("out", None, "folder for comparison.md, comparison.json, accuracy_vs_cost.png",
                    required=True)
flags.DEFINE_list("labels", None, "row names, one per run folder in order (default: each "
                  "report's label)")
FLAGS = flags.FLAGS


def main(argv):
  from orchestra.eval.report import (comparison_markdown, comparison_rows, load_report,
                                     plot_accuracy_vs_cost)
  run_dirs = argv[1:]
  if not run_dirs:
    raise app.UsageError("give one or more run folders (written by launch/eval.py --out DIR)")
  if FLAGS.labels is not None and len(FLAGS.labels) != len(run_dirs):
    raise app.UsageError(f"--labels has {len(FLAGS.labels)} names for {len(run_dirs)} run folders")
  reports = []
  for i, run_dir in enumerate(run_dirs):
    try:
      report = load_report(run_dir)
    except ValueError as e:
      print(f"compare.py: error: {e}", file=sys.stderr)
      return 1
    if FLAGS.labels is not None:
      report["label"] = FLAGS.labels[i]
    report["run_dir"] = os.path.abspath(run_dir)
    reports.append(report)
  try:
    table = comparison_markdown(reports)
    rows = comparison_rows(reports)
  except ValueError as e:
    print(f"compare.py: error: {e}", file=sys.stderr)
    return 1
  os.makedirs(FLAGS.out, exist_ok=True)
  md_path = os.path.join(FLAGS.out, "comparison.md")
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(table)
  json_path = os.path.join(FLAGS.out, "comparison.json")
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump([{"label": r["label"], "mean_cost_usd": r["mean_cost_usd"],
                "mean_latency_s": r["mean_latency_s"],
                "benchmarks": {b: {k: run[k] for k in ("n", "accuracy", "ci95", "mean_cost_usd",
                                                       "mean_latency_s", "run_dir")}
                               for b, run in r["runs"].items()}} for r in rows], f, indent=2)
  png_path = plot_accuracy_vs_cost(reports, os.path.join(FLAGS.out, "accuracy_vs_cost.png"))
  print(table)
  print(f"wrote {md_path}, {json_path} and {png_path}")
  return 0


if __name__ == "__main__":
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
