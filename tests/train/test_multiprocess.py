"""One run over two processes (`jax.distributed` on gloo, 4 CPU devices each, one global
(2, 2, 2) mesh): SFT gives the parameters of one process with 8 devices and of one device;
checkpoints move between 2 processes and 1; an RL step runs, and killing one process then
rerunning both resumes from the last checkpoint."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from stop_point import kill_at

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
STOPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_stop_after.py")
SHORT = ["--config.sft.steps=6", "--config.sft.num_demos=48", "--config.sft.batch_size=8",
         "--config.model.num_layers=2", "--config.checkpoint.every=3", "--noprogress"]
MESH = ["--config.mesh.num_devices=0", "--config.mesh.shape=(2,2,2)"]
pytestmark = pytest.mark.slow            # every test here starts launch/train.py


def env(devices: int) -> dict:
  return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def command(workdir, *args, script=None):
  script = script or [os.path.join(ROOT, "launch", "train.py")]
  return [sys.executable, *script, f"--config={CONFIG}", f"--workdir={workdir}", *SHORT, *args]


def process_flags(port: int, i: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]


def train_one(workdir, devices: int, *args):
  out = subprocess.run(command(workdir, *args), capture_output=True, text=True,
                       env=env(devices), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stderr


def train_two(workdir, *args):
  """Both processes of one run; returns process 0's log."""
  port = free_port()
  procs = [subprocess.Popen(command(workdir, *MESH, *args, *process_flags(port, i)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(4)) for i in (0, 1)]
  logs = [p.communicate(timeout=900)[0] for p in procs]
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, log[-3000:]
  return logs[0]


def exported(workdir) -> dict[str, np.ndarray]:
  """The run's newest checkpoint through launch/export_hf.py (one process), in float32."""
  out_dir = os.path.join(workdir, "hf_export")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export_hf.py"),
                        f"--workdir={workdir}", f"--out={out_dir}", "--dtype=float32"],
                       capture_output=True, text=True, env=env(1), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  tensors = {}
  for path in glob.glob(os.path.join(out_dir, "*.safetensors")):
    tensors.update(load_file(path))
  return tensors


def assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  diffs = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a])
  # Same batches, same math; only the order of reductions differs (Adam can amplify that
  # noise on near-zero gradients, hence the max bound).
  assert diffs.mean() <= 1e-6 and diffs.max() <= 1e-3, (diffs.mean(), diffs.max())


def back_to_step_3(src, dest):
  """A copy of run `src` as if killed after step 3's checkpoint."""
  shutil.copytree(src, dest, ignore=shutil.ignore_patterns("hf_export"))
  shutil.rmtree(os.path.join(dest, "checkpoints", "6"))
  shutil.rmtree(os.path.join(dest, "sft"))


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  train_one(root / "one_device", 1, "--config.rl.total_steps=0")
  train_one(root / "eight_devices", 8, "--config.rl.total_steps=0", *MESH)
  train_two(root / "two_processes", "--config.rl.total_steps=0")
  return root


def test_sft_over_two_processes_gives_the_one_process_parameters(sft_runs):
  one, eight, two = (exported(sft_runs / name)
                     for name in ("one_device", "eight_devices", "two_processes"))
  assert_same(one, eight)            # one process: a (2, 2, 2) mesh trains as one device does
  assert_same(one, two)
  assert_same(eight, two)
  with open(sft_runs / "two_processes" / "metrics.jsonl") as f:   # written once, by process 0
    assert [json.loads(line)["step"] for line in f] == list(range(1, 7))


def test_checkpoints_move_between_one_process_and_two(sft_runs, tmp_path):
  back_to_step_3(sft_runs / "one_device", tmp_path / "one_to_two")
  log = train_two(tmp_path / "one_to_two", "--config.rl.total_steps=0")
  assert "resuming sft at step 3" in log, log[-3000:]
  assert_same(exported(sft_runs / "one_device"), exported(tmp_path / "one_to_two"))

  back_to_step_3(sft_runs / "two_processes", tmp_path / "two_to_one")
  log = train_one(tmp_path / "two_to_one", 1, "--config.rl.total_steps=0")
  assert "resuming sft at step 3" in log, log[-3000:]
  assert_same(exported(sft_runs / "two_processes"), exported(tmp_path / "two_to_one"))


def test_rl_over_two_processes_resumes_after_one_is_killed(tmp_path):
  workdir = tmp_path / "run"                 # train_stop_after.py halts in .../run/checkpoints
  rl = ["--config.sft.steps=2", "--config.checkpoint.every=1", "--config.rl.total_steps=2",
        "--config.rl.algorithm=ppo", "--config.rl.loss.kl_coef=0.01",
        "--config.rl.tasks_per_step=2", "--config.rl.group_size=2"]
  port = free_port()
  other = subprocess.Popen(command(workdir, *MESH, *rl, *process_flags(port, 1)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env(4))
  try:
    # Process 0 stops dead once step 3 (the first RL step) is on disk, and is SIGKILLed.
    kill_at(command(workdir, *MESH, *rl, *process_flags(port, 0), script=[STOPPER, "3"]),
            "CHECKPOINTED 3", env=env(4), timeout_s=600)
    # The survivor notices its peer is gone (heartbeat) and exits with an error.
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


def test_incomplete_process_flags_fail_naming_them(tmp_path):
  out = subprocess.run(command(tmp_path, "--num_processes=2"), capture_output=True, text=True,
                       env=env(1), timeout=300)
  assert out.returncode != 0
  assert "--coordinator_address/--num_processes/--process_id" in out.stderr, out.stderr[-2000:]
