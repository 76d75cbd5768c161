"""One training job over several processes (hosts), on JAX's own runtime (`jax.distributed`).

Every process runs the same program over one global mesh of all processes' devices
(`jax.devices()`); jitted steps are SPMD, so every process must take part in each
one. What differs per process is only what touches the outside world:

  * process 0 (`is_main()`) drives the rollouts (engine, tools, experts, servers, each
    paid for once) and writes metrics, TensorBoard, the progress bar, the run record,
    the tokenizer and index, and HF exports;
  * its results reach the others with `broadcast_object`, so every process packs the
    same global batch from the same Python objects and places it with
    `jax.device_put` of identical host arrays onto the global sharding;
  * orbax checkpoints are saved and restored by all processes together (each writes
    or reads its own shards), so a checkpoint written by N processes restores in any
    number of them.

On CPU the cross-process collectives run on gloo. The run folder must be on a
filesystem every process sees (orbax needs that anyway).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Any, NoReturn

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class MultiProcessError(ValueError):
  """The multi-process flags cannot start a run; the message names the flag."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout_s: int | None = None) -> None:
  """Joins the job's processes (`jax.distributed.initialize`); call before any JAX work.

  With all three given, they are used as they are. With none given, JAX detects a
  cluster (SLURM, Open MPI, Kubernetes, Cloud TPU) or, finding none, the run stays
  one process. A partial set is filled in by the same detection; what is still
  missing is an error naming the flag. A process silent for `heartbeat_timeout_s`
  (None: jax.distributed's default, 100) counts as dead and stops the others (a
  survivor blocked in a collective with it waits that long).
  """
  given = (coordinator_address, num_processes, process_id)
  heartbeat = {}
  if heartbeat_timeout_s is not None:
    if heartbeat_timeout_s < 1:
      raise MultiProcessError(f"--heartbeat_timeout_s={heartbeat_timeout_s} must be >= 1")
    heartbeat = {"heartbeat_timeout_seconds": heartbeat_timeout_s}
  jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU hosts; GPUs use NCCL
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **heartbeat)
  except ValueError as e:
    if all(v is None for v in given):         # no cluster found: a one-process run
      logging.info("jax.distributed: %s; running as one process", e)
      return
    raise MultiProcessError(f"--coordinator_address/--num_processes/--process_id: {e}") from None
  logging.warning("process %d of %d; %d of %d devices local", jax.process_index(),
                  jax.process_count(), jax.local_device_count(), jax.device_count())


def exit_failed_run(error: BaseException) -> NoReturn:
  """Ends a failed multi-process run's process now, exit code 1, after printing `error`.

  When one process dies, the others' next collective fails at once (gloo: connection
  reset), but JAX's exit handler then waits at a shutdown barrier for every process,
  i.e. for the dead one's heartbeat timeout (78 s measured on CPU; JAX's default is
  100 s). Nothing is lost by skipping it: the run is over, launched rollout servers are
  stopped by then (the loop's `finally`), and a checkpoint being written is left aside
  as after a kill.
  """
  traceback.print_exception(error, file=sys.stderr)
  logging.error("process %d stops at once: a multi-process step failed (%s: %s); rerun "
                "every process to resume from the last checkpoint", jax.process_index(),
                type(error).__name__, str(error).splitlines()[0] if str(error) else "")
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)


def is_main() -> bool:
  """True in the process that drives rollouts and writes the run's files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier called `name` (no-op in one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def broadcast_object(obj: Any) -> Any:
  """Process 0's `obj` (any picklable value), returned in every process.

  The others' argument is ignored. Sent as bytes: first their length, then the bytes,
  each with `multihost_utils.broadcast_one_to_all`.
  """
  if jax.process_count() == 1:
    return obj
  data = np.frombuffer(pickle.dumps(obj), np.uint8) if is_main() else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
  if not is_main():
    data = np.zeros(size, np.uint8)
  data = multihost_utils.broadcast_one_to_all(data)
  return obj if is_main() else pickle.loads(np.asarray(data).tobytes())


def to_host(tree):
  """Numpy copies of a pytree's arrays, whole in every process (sharded ones gathered
  across processes; every process must call this together when any is)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)
