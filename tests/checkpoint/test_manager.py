"""Orbax checkpoints: keep policy, exact resume across processes, kill-safe saves."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra.checkpoint import CheckpointError, CheckpointManager
from orchestra.sharding import make_mesh
from stop_point import kill_at

HERE = os.path.dirname(__file__)


def test_keep_last_and_keep_every(tmp_path):
  with CheckpointManager(tmp_path, keep_last=2, keep_every=3) as manager:
    for step in range(1, 8):
      manager.save(step, {"params": {"w": jnp.full(3, step, jnp.float32)}}, {"pos": step})
    manager.wait()
    assert manager.all_steps() == [3, 6, 7]
    assert manager.latest_step() == 7


def test_restore_onto_the_shardings_of_the_live_state(tmp_path):
  mesh = make_mesh((1, 8, 1))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  state = {"layers": [{"w": jax.device_put(jnp.arange(16.0), sharding)}],
           "rng": jax.random.key_data(jax.random.key(3))}
  with CheckpointManager(tmp_path) as manager:
    manager.save(5, {"train_state": state}, {"data_position": 40, "config": {"lr": 1e-6}})
    manager.wait()
    like = {"train_state": jax.tree.map(jnp.zeros_like, state)}
    items, meta = manager.restore(like)
  restored = items["train_state"]
  np.testing.assert_array_equal(restored["layers"][0]["w"], np.arange(16.0))
  assert restored["layers"][0]["w"].sharding.is_equivalent_to(sharding, 1)
  np.testing.assert_array_equal(restored["rng"], state["rng"])
  assert meta == {"data_position": 40, "config": {"lr": 1e-6}, "step": 5}


def test_missing_steps_are_clear_errors(tmp_path):
  with CheckpointManager(tmp_path) as manager:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
      manager.restore({})
    manager.save(1, {"params": {"w": jnp.ones(2)}}, {})
    manager.wait()
    with pytest.raises(CheckpointError, match="step 9 is not in"):
      manager.restore({}, step=9)


def _run(*args, timeout=300):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  proc = subprocess.run([sys.executable, *args], timeout=timeout, env=env, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow                 # three training processes: minutes on 2 busy cores
def test_resume_after_process_exit_is_bit_identical(tmp_path):
  script = os.path.join(HERE, "resume_run.py")
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  _run(script, str(straight), "6", "6")
  _run(script, str(resumed), "6", "3")                  # stops after 3 steps
  assert not (resumed / "final.npz").exists()
  assert CheckpointManager(resumed).latest_step() == 3
  _run(script, str(resumed), "6", "6")                  # a new process resumes at step 3
  a, b = np.load(straight / "final.npz"), np.load(resumed / "final.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
  for key in a.files:
    assert np.array_equal(a[key], b[key]), key


def test_save_killed_halfway_leaves_previous_step_resumable(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  ckpt_dir = tmp_path / "checkpoints"
  # The child stops inside its step-2 save (data written, not yet committed) and says so.
  seen = {}
  kill_at([sys.executable, os.path.join(HERE, "interrupted_save.py"), str(tmp_path)], "IN SAVE",
          env=env, on_marker=lambda: seen.update(in_save=sorted(os.listdir(ckpt_dir))))
  in_save = seen["in_save"]
  temporary = [n for n in in_save if not n.isdigit()]
  assert len(temporary) == 1 and temporary[0].startswith("2"), in_save   # step 2, half done
  assert sorted(os.listdir(ckpt_dir)) == in_save == ["1", *temporary]
  with CheckpointManager(tmp_path) as manager:     # opening it removes the temporary folder
    assert manager.all_steps() == [1] and manager.latest_step() == 1
    items, meta = manager.restore({"params": {"w": jnp.zeros(10)}})
  np.testing.assert_array_equal(items["params"]["w"], np.arange(10.0))
  assert meta["data_position"] == 1
  assert sorted(os.listdir(ckpt_dir)) == ["1"]
