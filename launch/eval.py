"""Evaluate a run's policies and baselines under the config's preference vectors.

  python launch/eval.py --config configs/tiny_cpu.py --workdir runs/tiny

Writes WORKDIR/eval/report.json (one row per policy x preference), report.md
and pareto.png (accuracy vs cost), and prints the table.
"""

import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "the run's configs/*.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "the run folder written by launch/train.py")
flags.DEFINE_list("policies", None, "subset of rl,sft,random,cheapest,strongest (default: config)")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.config is None or not FLAGS.workdir:
    raise app.UsageError("--config and --workdir are required")
  from orchestra.checkpoint import CheckpointError
  from orchestra.eval.preference_eval import evaluate, write_report
  from orchestra.train.setup import ConfigValueError, build_setup

  try:
    setup = build_setup(FLAGS.config, FLAGS.workdir)
    rows = evaluate(setup, FLAGS.workdir, policies=FLAGS.policies)
  except (ConfigValueError, CheckpointError) as e:
    raise app.UsageError(str(e)) from None
  paths = write_report(rows, os.path.join(FLAGS.workdir, "eval"))
  with open(paths["md"]) as f:
    print(f.read())
  print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")


if __name__ == "__main__":
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
