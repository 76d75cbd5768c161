"""RL over two processes (`jax.distributed` on gloo, one global (2, 2, 2) mesh): killing one
process then rerunning both resumes from the last checkpoint; on a launched rollout server
the policy gathered from both processes' shards is synced exactly."""

import json
import signal
import subprocess

import numpy as np
import pytest
from multiprocess_runs import (MESH, STOPPER, command, env, exported, free_port, process_flags,
                               safetensors_in, start_process, train_two)

from stop_point import kill_at

pytestmark = pytest.mark.slow            # every test here starts launch/train.py


def test_rl_over_two_processes_resumes_after_one_is_killed(tmp_path):
  workdir = tmp_path / "run"                 # train_stop_after.py halts in .../run/checkpoints
  rl = ["--config.sft.steps=2", "--config.checkpoint.every=1", "--config.rl.total_steps=2",
        "--config.rl.algorithm=ppo", "--config.rl.loss.kl_coef=0.01",
        "--config.rl.tasks_per_step=2", "--config.rl.group_size=2"]
  port = free_port()
  other = start_process(workdir, port, 1, *rl)
  try:
    # Process 0 stops dead once step 3 (the first RL step) is on disk, and is SIGKILLed.
    kill_at(command(workdir, *MESH, *rl, *process_flags(port, 0), script=[STOPPER, "3"]),
            "CHECKPOINTED 3", env=env(4), timeout_s=600)
    # The survivor's next collective fails with its peer gone, and it exits with an error.
    log = other.communicate(timeout=300)[0]
    assert other.returncode != 0, log[-3000:]
  finally:
    if other.poll() is None:
      other.send_signal(signal.SIGKILL)
      other.wait()

  log = train_two(workdir, *rl)
  assert "resuming rl at step 3" in log, log[-3000:]
  with open(workdir / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for r in rows[2:]:                      # each RL step updated the policy and the critic
    assert r["stage"] == "rl" and r["kept_groups"] > 0, r
    assert np.isfinite([r["loss"], r["kl"], r["value_loss"]]).all(), r


def test_rl_over_two_processes_on_a_launched_server_syncs_exactly(tmp_path):
  """Rollouts on a server the run launches, sampled one step ahead: process 0 exports the
  policy gathered from both processes' shards, and the last export is the final
  checkpoint, bit for bit."""
  workdir = tmp_path / "run"
  train_two(workdir, "--config.sft.steps=2", "--config.rl.total_steps=2",
            "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
            "--config.rollout.engine=http", "--config.rollout.launch=1",
            "--config.rollout.max_staleness=1", "--config.rl.loss.tis_cap=2.0")
  with open(workdir / "metrics.jsonl") as f:
    rl = [json.loads(line) for line in f if '"rl"' in line]
  assert [(r["step"], r["weight_version"], r["policy_lag"]) for r in rl] == [(3, 3, 0), (4, 4, 1)]
  assert all(r["stale_turns"] == 0 and r["lost_episodes"] == 0 for r in rl)
  synced = safetensors_in(workdir / "weight_sync" / "step_4")
  final = exported(workdir)
  assert synced.keys() == final.keys()
  for name, array in final.items():
    np.testing.assert_array_equal(synced[name], array, err_msg=name)
  listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
  assert str(workdir) not in listed                           # the server stopped with the run
