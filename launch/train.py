"""Train an orchestrator: SFT warm start, then GRPO under sampled preference vectors.

  python launch/train.py --config configs/tiny_cpu.py --workdir runs/tiny
  python launch/train.py --config configs/tiny_cpu.py --workdir runs/tiny --config.rl.total_steps=3

Rerunning the same command resumes from the newest checkpoint in --workdir.
Metrics go to WORKDIR/metrics.jsonl and WORKDIR/tb (TensorBoard).

Over several processes or hosts (JAX's multi-process runtime; WORKDIR on a shared
filesystem; --config.mesh.num_devices=0), start one process per host with

  python launch/train.py --config ... --workdir ... \
      --coordinator_address=HOST0:1234 --num_processes=N --process_id=I

or, on SLURM, Open MPI or Kubernetes, without the three flags (JAX detects them).
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
flags.DEFINE_string("coordinator_address", None, "multi-process run: HOST:PORT of process 0's "
                    "coordinator (jax.distributed); none of the three flags: detected on "
                    "SLURM/Open MPI/Kubernetes, else one process")
flags.DEFINE_integer("num_processes", None, "multi-process run: how many processes in all")
flags.DEFINE_integer("process_id", None, "multi-process run: this process's index, 0..N-1")
flags.DEFINE_integer("heartbeat_timeout_s", None, "multi-process run: seconds without a "
                     "heartbeat before a process counts as dead and the others stop "
                     "(default: jax.distributed's, 100)")
FLAGS = flags.FLAGS


def prepare_workdir(workdir: str) -> None:
  """Creates the run folder; a path that is a file or not writable is a clear error."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir={workdir} is a file, not a folder")
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir={workdir} is not writable")


def prepare_run(config, workdir: str):
  """(config changes since the run folder's record, the run's setup).

  Process 0 writes the folder (record, tokenizer, index) first; the others then build
  the same setup from it. An error in process 0 is raised in every process.
  """
  from orchestra.sharding.multihost import broadcast_object, is_main
  from orchestra.train.run_record import RunRecordError, check_against_record, record_config
  from orchestra.train.setup import build_setup
  from orchestra.train.setup_base import ConfigValueError
  changes, setup, error = {}, None, None
  if is_main():
    try:
      prepare_workdir(workdir)
      check_against_record(config, workdir)   # a different model or data: refused first
      setup = build_setup(config, workdir)
      changes = record_config(config, workdir)   # only a launch that got this far
    except (ConfigValueError, RunRecordError, NotADirectoryError, PermissionError) as e:
      error = e
  error = broadcast_object(error)
  if error is not None:
    raise error
  return changes, setup or build_setup(config, workdir)


def main(argv):
  del argv
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/tiny_cpu.py")
  from orchestra.train.run_record import RunRecordError
  from orchestra.train.setup import check_config
  from orchestra.train.setup_base import ConfigValueError
  if not FLAGS.workdir and not FLAGS.dry_run:
    raise app.UsageError("--workdir is required (the run's folder; reruns resume from it)")
  import jax

  from orchestra.sharding.multihost import MultiProcessError, exit_failed_run, initialize
  try:
    if not FLAGS.dry_run:              # the dry run plans per device, in one process
      initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                 FLAGS.heartbeat_timeout_s)
    check_config(config)               # before anything is written into the run folder
    if FLAGS.dry_run:
      from orchestra.train.dry_run import dry_run
      if FLAGS.workdir:
        prepare_workdir(FLAGS.workdir)
      print(dry_run(config, FLAGS.workdir, activations=FLAGS.dry_run_activations))
      return
    changes, setup = prepare_run(config, FLAGS.workdir)
  except (ConfigValueError, RunRecordError, NotADirectoryError, PermissionError,
          MultiProcessError) as e:
    raise app.UsageError(str(e)) from None
  if changes:                          # process 0's alone
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
  except Exception as e:              # e.g. a collective whose peer process died
    if jax.process_count() > 1:
      exit_failed_run(e)              # not JAX's exit barrier, which waits out the heartbeat
    raise
  logging.info("done: %s", metrics)
  print(f"training done; checkpoints in {os.path.join(FLAGS.workdir, 'checkpoints')}. "
        f"Evaluate with: python launch/eval.py --config <same config> --workdir {FLAGS.workdir}")


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  from orchestra.train.cli import define_compilation_cache_flag, parse_flags
  define_compilation_cache_flag()
  app.run(main, flags_parser=parse_flags)
