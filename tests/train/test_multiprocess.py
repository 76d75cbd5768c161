"""SFT over two processes (`jax.distributed` on gloo, 4 CPU devices each, one global
(2, 2, 2) mesh) gives the parameters of one process with 8 devices and of one device;
checkpoints move between 2 processes and 1; a killed process stops the other within the
heartbeat timeout. (RL over two processes: test_multiprocess_rl.py.)"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from multiprocess_runs import (MESH, assert_same, command, env, exported, start_two, train_one,
                               train_two)

pytestmark = pytest.mark.slow            # every test here starts launch/train.py


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


def test_a_killed_process_stops_the_other_within_the_heartbeat_timeout(tmp_path):
  """Process 1 SIGKILLed mid-SFT: process 0 fails within seconds of the heartbeat timeout
  (10 s here), not after JAX's exit barrier or its default 100 s."""
  procs = start_two(tmp_path, "--config.sft.steps=500", "--config.rl.total_steps=0",
                    "--heartbeat_timeout_s=10")
  try:
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
      assert time.monotonic() < deadline and procs[0].poll() is None, "no SFT step logged"
      time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    log = procs[0].communicate(timeout=60)[0]          # default heartbeat: 78-84 s measured
    assert procs[0].returncode != 0, log[-3000:]
    assert time.monotonic() - killed < 45, log[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()


def test_incomplete_process_flags_fail_naming_them(tmp_path):
  out = subprocess.run(command(tmp_path, "--num_processes=2"), capture_output=True, text=True,
                       env=env(1), timeout=300)
  assert out.returncode != 0
  assert "--coordinator_address/--num_processes/--process_id" in out.stderr, out.stderr[-2000:]
