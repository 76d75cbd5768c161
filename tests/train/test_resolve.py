"""Every config field is read by code or the run refuses it; --dry_run prints the resolved run."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from data_paths import TAU2, require_data

from orchestra.train.resolve import ReadTracker, resolved_run, unread_fields, unread_message
from orchestra.train.setup import check_config
from orchestra.train.setup_base import ConfigValueError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("name", ["tiny_cpu", "tau2_retail_cpu", "qwen3_8b_grpo",
                                  "qwen3_1p7b_grpo"])
def test_every_field_of_the_shipped_configs_is_read(name):
  assert unread_fields(load(name)) == []


def test_all_configs_share_one_schema():
  """The paper configs are tiny_cpu's schema with other values (and their env's fields)."""
  tiny = load("tiny_cpu")
  for name in ("qwen3_8b_grpo", "qwen3_1p7b_grpo"):
    paper = load(name)
    assert sorted(paper.keys()) == sorted(tiny.keys()), name
    for subtree in ("model", "mesh", "episode", "checkpoint", "eval"):
      assert sorted(paper[subtree].keys()) == sorted(tiny[subtree].keys()), (name, subtree)
    assert set(paper.rl.keys()) <= set(tiny.rl.keys())            # minus PPO-only fields


def test_server_fields_are_read_with_either_engine_and_needed_with_http():
  config = load("tiny_cpu")
  assert unread_fields(config) == []                       # kept for --config.rollout.engine=http
  del config.rollout["server"]
  assert unread_fields(config) == []                       # optional with the in-process engine
  config.rollout.engine = "http"
  with pytest.raises(ConfigValueError, match="config.rollout.server is missing"):
    check_config(config)


def test_a_field_no_code_reads_is_named_with_the_nearest_valid_ones():
  config = load("tiny_cpu")
  config.rl.totl_steps = 3                                 # a typo in a config file
  config.episode.unused_knob = 1.0                         # a dead field
  unread = unread_fields(config)
  assert unread == ["episode.unused_knob", "rl.totl_steps"]
  message = unread_message(config, unread)
  assert "config.rl.totl_steps is read by no code" in message
  assert "nearest valid: total_steps" in message and "config.episode.unused_knob" in message


def test_the_tracker_records_reads_and_the_resolved_run_shows_overrides():
  config = load("tiny_cpu")
  config.rl.loss.dual_clip = 3.0
  tracker = ReadTracker(config)
  run = resolved_run(tracker)
  assert "rl.loss.dual_clip" in tracker.seen and run["rl"]["policy_loss"]["dual_clip"] == 3.0
  assert run["episode"]["max_total_tokens"] == config.episode.max_total_tokens
  json.dumps(run)                                          # JSON-able as printed


def dry_run(config_file, *overrides, workdir=None):
  args = [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--config={config_file}",
          *overrides, "--dry_run", "--nodry_run_activations"]     # (tests/train/test_dry_run.py)
  if workdir:
    args.append(f"--workdir={workdir}")
  return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_cpu", "tau2_retail_cpu", "qwen3_8b_grpo",
                                  "qwen3_1p7b_grpo"])
def test_dry_run_of_every_config_prints_the_resolved_run_with_overrides(name, tmp_path):
  if name == "tau2_retail_cpu":
    require_data(TAU2 / "domains" / "retail", "tau2 data")
  out = dry_run(os.path.join(CONFIGS, f"{name}.py"), "--config.rl.loss.clip_high=0.33",
                workdir=tmp_path / "run")
  assert out.returncode == 0, out.stderr[-3000:]
  run = json.loads(out.stdout.strip().splitlines()[-1])
  assert run["policy_loss" if "policy_loss" in run else "rl"] is not None
  loss = run.get("policy_loss") or run["rl"]["policy_loss"]
  assert loss["clip_high"] == 0.33
  assert run["model"]["num_params"] > 0


@pytest.mark.slow
def test_a_config_file_with_an_unread_field_refuses_to_start(tmp_path):
  config_file = tmp_path / "typo.py"
  config_file.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('t', {os.path.join(CONFIGS, 'tiny_cpu.py')!r})\n"
      "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n"
      "def get_config():\n  c = m.get_config()\n  c.rl.totl_steps = 3\n  return c\n")
  out = dry_run(config_file, workdir=tmp_path / "run")
  assert out.returncode != 0 and "config.rl.totl_steps is read by no code" in out.stderr
  assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()   # nothing written
