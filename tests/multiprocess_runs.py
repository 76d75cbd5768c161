"""Runs of launch/train.py (the tiny config, shortened) in one process or in two joined by
`jax.distributed` on gloo (4 forced CPU devices each, one global (2, 2, 2) mesh), for the
multi-process tests (tests/train/test_multiprocess*.py)."""

import glob
import os
import socket
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
STOPPER = os.path.join(ROOT, "tests", "train", "train_stop_after.py")
SHORT = ["--config.sft.steps=6", "--config.sft.num_demos=48", "--config.sft.batch_size=8",
         "--config.model.num_layers=1", "--config.checkpoint.every=3", "--noprogress"]
MESH = ["--config.mesh.num_devices=0", "--config.mesh.shape=(2,2,2)"]


def env(devices: int) -> dict:
  """The tests' environment with `devices` forced host devices (other XLA flags kept)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "XLA_FLAGS": " ".join(flags)}


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


def start_process(workdir, port: int, i: int, *args) -> subprocess.Popen:
  """Starts process `i` of a two-process run on the coordinator `port` (output merged into
  stdout)."""
  return subprocess.Popen(command(workdir, *MESH, *args, *process_flags(port, i)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env(4))


def start_two(workdir, *args) -> list[subprocess.Popen]:
  """Starts both processes of one run; returns them."""
  port = free_port()
  return [start_process(workdir, port, i, *args) for i in (0, 1)]


def train_two(workdir, *args):
  """Both processes of one run; returns process 0's log."""
  procs = start_two(workdir, *args)
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
  return safetensors_in(out_dir)


def safetensors_in(folder) -> dict[str, np.ndarray]:
  """Every tensor of a Hugging Face folder's safetensors files, by name."""
  tensors = {}
  for path in glob.glob(os.path.join(folder, "*.safetensors")):
    tensors.update(load_file(path))
  return tensors


def assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  diffs = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a])
  # Same batches, same math; only the order of reductions differs (Adam can amplify that
  # noise on near-zero gradients, hence the max bound).
  assert diffs.mean() <= 1e-6 and diffs.max() <= 1e-3, (diffs.mean(), diffs.max())
