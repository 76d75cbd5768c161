"""A damaged newest checkpoint: training resumes from the step before, eval/export skip it."""

import json
import re
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
SHORT = ["--config.sft.steps=4", "--config.sft.num_demos=32", "--config.sft.batch_size=8",
         "--config.rl.tasks_per_step=2", "--config.rl.group_size=2", "--config.checkpoint.every=2",
         "--config.model.num_layers=1", "--noprogress"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
pytestmark = pytest.mark.slow


def run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        capture_output=True, text=True, env=ENV, timeout=600)


def damage(step_dir):
  """Truncates every array data file of the step's `params` item to half its size."""
  hit = 0
  for folder, _, files in os.walk(os.path.join(step_dir, "params")):
    for name in files:
      path = os.path.join(folder, name)
      if os.path.getsize(path) > 1024:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        hit += 1
  assert hit, "no data file found to damage"


def test_resume_and_export_skip_a_damaged_newest_step(tmp_path):
  workdir = str(tmp_path / "run")
  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=0")
  assert out.returncode == 0, out.stderr[-3000:]
  checkpoints = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(checkpoints)) == ["2", "4"]
  damage(os.path.join(checkpoints, "4"))

  out = run("export_hf.py", f"--workdir={workdir}", f"--out={tmp_path / 'hf'}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "skipping checkpoint step 4" in out.stderr and "exported step 2" in out.stdout

  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checkpoint step 4 does not restore" in out.stderr and "at step 2" in out.stderr, out.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, "unreadable_checkpoints", "4"))   # kept aside
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  assert [r["stage"] for r in rows] == ["sft"] * 4 + ["rl"]


def test_a_damaged_kl_reference_stops_the_resume_once_and_keeps_the_metrics(tmp_path):
  """The KL reference lives in `sft/`, not among the main folder's steps: a damaged one is
  one clear error (it used to retry forever), and a resume that fails before its first step
  leaves `metrics.jsonl` as it was, a torn last line and all."""
  workdir = str(tmp_path / "run")
  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=0")
  assert out.returncode == 0, out.stderr[-3000:]
  damage(os.path.join(workdir, "sft", "checkpoints", "4"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "sta')                                  # a kill mid-write
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    before = f.read()

  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=1", "--config.rl.loss.kl_coef=0.1")
  assert out.returncode != 0
  assert "the KL reference (the SFT result in" in out.stderr, out.stderr[-3000:]
  assert out.stderr.count("does not restore") <= 2, out.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == before

  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=1")                           # no reference needed
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]                      # the torn line is gone
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]


def test_overrides_that_contradict_the_checkpoints_are_refused_and_lose_nothing(tmp_path):
  """Lowering `sft.steps` after SFT finished used to start RL from the untrained policy,
  and switching to PPO set healthy RL checkpoints aside as unreadable."""
  workdir = str(tmp_path / "run")
  out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
            "--config.rl.total_steps=2")
  assert out.returncode == 0, out.stderr[-3000:]
  checkpoints = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  for override, message in [
      ("--config.sft.steps=2", "config.sft.steps=2, but .* SFT ended at step 4 .* "
                               "--config.sft.steps=4"),
      ("--config.rl.algorithm=ppo", "config.rl.algorithm='ppo', but .* RL checkpoints were "
                                    "written by grpo")]:
    out = run("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *SHORT,
              "--config.rl.total_steps=4", override)
    assert out.returncode != 0
    assert re.search(message, out.stderr.replace("\n", " ")), out.stderr[-3000:]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == checkpoints
    assert not os.path.exists(os.path.join(workdir, "unreadable_checkpoints"))


def test_sft_steps_below_the_sft_checkpoint_are_refused(tmp_path):
  from ml_collections import ConfigDict

  from orchestra.checkpoint import CheckpointError
  from orchestra.train.loop import _check_resumable
  config = ConfigDict({"sft": {"steps": 2}, "rl": {"algorithm": "grpo"}})
  with pytest.raises(CheckpointError, match="holds SFT at step 4: relaunch with "
                                            "--config.sft.steps=4 or more"):
    _check_resumable(config, None, {"step": 4, "stage": "sft"}, str(tmp_path))
  _check_resumable(config, None, {"step": 2, "stage": "sft"}, str(tmp_path))     # fine
