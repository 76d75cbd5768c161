"""Train an orchestrator: SFT warm start, then GRPO under sampled preference vectors.

  python launch/train.py --config configs/tiny_cpu.py --workdir runs/tiny
  python launch/train.py --config configs/tiny_cpu.py --workdir runs/tiny --config.rl.total_steps=3

Rerunning the same command resumes from the newest checkpoint in --workdir.
Metrics go to WORKDIR/metrics.jsonl and WORKDIR/tb (TensorBoard).
"""

import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder (checkpoints, metrics, tokenizer, index)")
flags.DEFINE_bool("dry_run", False, "check the config, build what it names and plan the run "
                  "(resolved run as JSON on the last line), then exit")
flags.DEFINE_bool("dry_run_activations", True, "--dry_run also compiles 2- and 3-layer "
                  "proxies of the training step for its per-device activation memory "
                  "(orchestra/train/activation_plan.py; about a minute at paper scale on CPU)")
flags.DEFINE_bool("progress", True, "show a progress bar")
FLAGS = flags.FLAGS


def prepare_workdir(workdir: str) -> None:
  """Creates the run folder; a path that is a file or not writable is a clear error."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir={workdir} is a file, not a folder")
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir={workdir} is not writable")


def main(argv):
  del argv
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/tiny_cpu.py")
  from orchestra.train.run_record import RunRecordError, record_config
  from orchestra.train.setup import build_setup, check_config
  from orchestra.train.setup_base import ConfigValueError
  if not FLAGS.workdir and not FLAGS.dry_run:
    raise app.UsageError("--workdir is required (the run's folder; reruns resume from it)")
  try:
    check_config(config)               # before anything is written into the run folder
    if FLAGS.dry_run:
      from orchestra.train.dry_run import dry_run
      if FLAGS.workdir:
        prepare_workdir(FLAGS.workdir)
      print(dry_run(config, FLAGS.workdir, activations=FLAGS.dry_run_activations))
      return
    prepare_workdir(FLAGS.workdir)
    changes = record_config(config, FLAGS.workdir)
    setup = build_setup(config, FLAGS.workdir)
  except (ConfigValueError, RunRecordError, NotADirectoryError, PermissionError) as e:
    raise app.UsageError(str(e)) from None
  if changes:
    logging.warning("relaunch with changed settings (logged in config_overrides.jsonl): %s",
                    ", ".join(f"{k}={new!r}" for k, (_, new) in changes.items()))
  from orchestra.checkpoint import CheckpointError
  from orchestra.engines.server_pool import ServerLaunchError
  from orchestra.train.loop import train
  from orchestra.train.rollouts import RolloutsFailed
  # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C: launched rollout servers are
  # stopped and the checkpoint being written completes or is left aside.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
  try:
    metrics = train(setup, FLAGS.workdir, progress=FLAGS.progress)
  except (CheckpointError, RolloutsFailed, ServerLaunchError) as e:
    raise app.UsageError(str(e)) from None
  logging.info("done: %s", metrics)
  print(f"training done; checkpoints in {os.path.join(FLAGS.workdir, 'checkpoints')}. "
        f"Evaluate with: python launch/eval.py --config <same config> --workdir {FLAGS.workdir}")


if __name__ == "__main__":
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
