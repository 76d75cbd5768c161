"""An RL step's rollouts on a tau2 domain, steady state, from a trained run (CPU).

  python launch/train.py --config configs/tau2_retail_cpu.py --workdir runs/retail
  python bench/domain_rollouts.py --config configs/tau2_retail_cpu.py --workdir runs/retail

Restores the run's newest policy, builds its setup and samples the episodes of its RL
steps (`loop.sample_step`: `rl.tasks_per_step` x `rl.group_size` concurrent episodes on
the in-process `JaxEngine`, graded by tau2's evaluator) twice in one process: the first
pass compiles the sampler's programs, the second is the steady state. Prints, per step
and pass, the rollout seconds, the generated tokens, and the seconds that went to fresh
domain DBs (`Domain.fresh_db`) and DB hashes (`DB.db_hash`), measured by wrapping both.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "a tau2-domain training config")
flags.DEFINE_string("workdir", None, "the run's folder (checkpoints, tokenizer)")
flags.DEFINE_integer("steps", 4, "RL steps to sample (from the run's first RL step)")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def timed(cls, name: str, seconds: collections.Counter) -> None:
  """Wraps `cls.name` so that its calls add their wall time to `seconds[name]`."""
  method = getattr(cls, name)

  @functools.wraps(method)
  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return method(*args, **kwargs)
    finally:
      seconds[name] += time.perf_counter() - start
  setattr(cls, name, wrapper)


async def sample(setup, model, first_step: int, seconds: collections.Counter) -> None:
  from orchestra.engines.jax_engine import JaxEngine
  from orchestra.engines.weight_sync import InProcessSync
  from orchestra.train.loop import sample_step
  from orchestra.train.rollouts import Rollouts
  engine = JaxEngine(model)
  rollouts = Rollouts(engine, InProcessSync(engine))
  for label in ("first pass (compiles)", "second pass"):
    for step in range(first_step, first_step + FLAGS.steps):
      seconds.clear()
      episodes = await sample_step(setup, rollouts, step)
      tokens = sum(sum(r.trajectory.loss_mask) for group in episodes.groups for r in group)
      print(f"{label:22s} step {step}: rollouts {episodes.rollout_s:6.2f} s, "
            f"{tokens:5d} generated tokens, fresh DBs {seconds['fresh_db']:5.2f} s, "
            f"DB hashes {seconds['db_hash']:5.2f} s", flush=True)


def main(argv):
  del argv
  from orchestra.checkpoint.export import restore_policy
  from orchestra.envs.domains.base import DB, Domain
  from orchestra.train.setup import build_setup
  config = FLAGS.config
  if config.env.get("name") != "tau2_domain":
    raise app.UsageError(f"--config: env.name is {config.env.get('name')!r}; this benchmark "
                         "samples tau2-domain episodes (env.name='tau2_domain')")
  setup = build_setup(config, FLAGS.workdir)
  model, step = restore_policy(FLAGS.workdir)
  print(f"policy: checkpoint step {step} of {FLAGS.workdir}; "
        f"{config.rl.tasks_per_step} tasks x {config.rl.group_size} episodes per step")
  seconds = collections.Counter()
  timed(Domain, "fresh_db", seconds)
  timed(DB, "db_hash", seconds)
  asyncio.run(sample(setup, model, config.sft.steps, seconds))


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  app.run(main)
