"""A shortened main job (a few steps of each stage), eval on it, kill + resume, config errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
SHORT = ["--config.sft.steps=4", "--config.sft.num_demos=48", "--config.sft.batch_size=8",
         "--config.rl.total_steps=3", "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
         "--config.checkpoint.every=2", "--config.model.num_layers=2", "--noprogress"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def launch(script, *args, timeout=600):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script),
                         f"--config={CONFIG}", *args], capture_output=True, text=True, env=ENV,
                        timeout=timeout)


def steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  out = launch("train.py", f"--workdir={workdir}", *SHORT)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def test_short_main_job_runs_both_stages(short_run):
  rows = steps(short_run)
  assert [r["step"] for r in rows] == list(range(1, 8))
  assert [r["stage"] for r in rows] == ["sft"] * 4 + ["rl"] * 3
  assert rows[3]["nll"] < rows[0]["nll"]
  for r in rows[4:]:
    assert {"reward", "accuracy", "cost_usd", "latency_s", "rollout_s", "kept_groups",
            "calls/code_interpreter", "calls/expert-large"} <= set(r)
  for name in ("tokenizer/tokenizer.json", "index/meta.json", "sft/checkpoints", "tb",
               "config.json"):
    assert os.path.exists(os.path.join(short_run, name)), name


def test_eval_writes_table_json_and_plot(short_run):
  out = launch("eval.py", f"--workdir={short_run}", "--config.eval.num_tasks=3",
               "--config.model.num_layers=2")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(short_run, "eval", "report.json")) as f:
    rows = json.load(f)
  assert {(r["policy"], r["preference"]) for r in rows} == {
      (p, q) for p in ("rl", "sft", "random", "cheapest", "strongest")
      for q in ("balanced", "low_cost", "high_accuracy", "low_latency")}
  for r in rows:
    assert {"policy", "preference", "accuracy", "mean_cost_usd", "mean_latency_s", "mean_reward",
            "tool_calls", "n"} <= set(r) and r["n"] == 3
  strongest = next(r for r in rows if r["policy"] == "strongest")
  cheapest = next(r for r in rows if r["policy"] == "cheapest")
  assert strongest["mean_cost_usd"] > 10 * cheapest["mean_cost_usd"]
  assert strongest["tool_calls"]["expert-large"] == 1.0
  png = os.path.join(short_run, "eval", "pareto.png")
  assert os.path.getsize(png) > 10_000 and "| rl | balanced |" in out.stdout


def test_killed_run_resumes_and_finishes(tmp_path):
  workdir = str(tmp_path / "run")
  args = [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--config={CONFIG}",
          f"--workdir={workdir}", *SHORT]
  proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline:        # kill once the first checkpoint (step 2) is written
    if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert len(steps(workdir)) < 7
  out = launch("train.py", f"--workdir={workdir}", *SHORT[:-1])
  assert out.returncode == 0, out.stderr[-3000:]
  rows = steps(workdir)
  assert rows[-1]["step"] == 7 and rows[-1]["stage"] == "rl"
  assert sorted({r["step"] for r in rows}) == list(range(1, 8))      # every step ran at least once


def test_kl_penalty_against_the_frozen_sft_policy(tmp_path):
  out = launch("train.py", f"--workdir={tmp_path}", *SHORT[:-1], "--config.rl.kl_coef=0.1",
               "--config.rl.total_steps=2", "--config.rl.std_threshold=0.0", "--noprogress")
  assert out.returncode == 0, out.stderr[-3000:]
  rl_rows = [r for r in steps(str(tmp_path)) if r["stage"] == "rl"]
  assert len(rl_rows) == 2 and all("kl" in r for r in rl_rows if "loss" in r)
  assert any("loss" in r for r in rl_rows)


def test_ppo_trains_a_value_model_and_resumes_it(tmp_path):
  ppo = [*SHORT, "--config.rl.algorithm=ppo"]
  out = launch("train.py", f"--workdir={tmp_path}", *ppo, "--config.rl.total_steps=2")
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "6", "value_params"))
  out = launch("train.py", f"--workdir={tmp_path}", *ppo)        # resumes at 6, critic restored
  assert out.returncode == 0, out.stderr[-3000:]
  rl_rows = [r for r in steps(str(tmp_path)) if r["stage"] == "rl"]
  assert [r["step"] for r in rl_rows] == [5, 6, 7]
  assert all("value_loss" in r and "sync_s" in r for r in rl_rows if "loss" in r)


@pytest.mark.parametrize("override, message", [
    ("--config.rl.algorithm=ppo2", "config.rl.algorithm='ppo2'"),
    ("--config.rl.group_size=0", "config.rl.group_size=0"),
    ("--config.train_preferences=('greedy',)", "config.train_preferences names ['greedy']"),
    ("--config.rl.totl_steps=3", "totl_steps"),
])
def test_bad_configs_fail_naming_the_field(tmp_path, override, message):
  out = launch("train.py", f"--workdir={tmp_path}", "--dry_run", override, timeout=300)
  assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
