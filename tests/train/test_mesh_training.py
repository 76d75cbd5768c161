"""RL on a device mesh (`config.mesh`, 8 forced CPU devices as (data 2, fsdp 2, tensor 2)):
PPO with a KL reference, so the policy, the critic and the reference are all placed, in
bfloat16. (That SFT on this mesh trains the one-device parameters is checked, with two
processes beside them, by test_multiprocess's `sft_runs`.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from orchestra.checkpoint import SFT_DIR
from orchestra.checkpoint.export import restore_policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
SHORT = ["--config.sft.steps=3", "--config.sft.num_demos=48", "--config.sft.batch_size=8",
         "--config.model.num_layers=1", "--noprogress"]
MESH = ["--config.mesh.num_devices=8", "--config.mesh.shape=(2,2,2)"]
pytestmark = pytest.mark.slow            # every test here starts launch/train.py


def train(workdir, *args):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={CONFIG}", f"--workdir={workdir}", *SHORT, *args],
                       capture_output=True, text=True, env=ENV, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]


def test_ppo_with_a_kl_reference_runs_on_a_mesh_in_bfloat16(tmp_path):
  train(tmp_path, *MESH, "--config.model.dtype=bfloat16", "--config.rl.algorithm=ppo",
        "--config.rl.loss.kl_coef=0.01", "--config.rl.total_steps=2",
        "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
        "--config.rl.std_threshold=0.0", "--config.rl.micro_batches=2")
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"rl"' in line]
  assert len(rows) == 2
  for r in rows:
    assert np.isfinite([r["loss"], r["kl"], r["value_loss"]]).all(), r
    assert 0 <= r["kl"] < 1e-3 and r["stale_turns"] == 0
  # SFT's saved policy (the reference) restores sliced over a mesh of 4.
  from orchestra.sharding import make_mesh
  import jax
  mesh = make_mesh((1, -1, 1), jax.devices()[:4])
  model, _ = restore_policy(str(tmp_path / SFT_DIR), mesh=mesh, compute_dtype="bfloat16")
  embed = model.model.embed[...]
  assert len(embed.sharding.device_set) == 4 and embed.dtype == np.float32
