"""A shortened main job (a few steps of each stage), eval on it, kill + resume, config errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from stop_point import kill_at

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
SHORT = ["--config.sft.steps=4", "--config.sft.num_demos=48", "--config.sft.batch_size=8",
         "--config.rl.total_steps=3", "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
         "--config.checkpoint.every=2", "--config.model.num_layers=1", "--noprogress"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
pytestmark = pytest.mark.slow            # every test here starts launch/*.py


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
  # Micro-batches (3 kept episodes pad to 4 rows) and the loss's optional terms take effect.
  out = launch("train.py", f"--workdir={workdir}", *SHORT, "--config.rl.micro_batches=2",
               "--config.rl.loss.dual_clip=3.0", "--config.rl.loss.tis_cap=2.0")
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


def test_eval_writes_table_json_and_plot(short_run, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(short_run, run)                       # the module's run stays untouched
  out = launch("eval.py", f"--workdir={run}", "--config.eval.num_tasks=3",
               "--config.model.num_layers=1")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(run, "eval", "report.json")) as f:
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
  png = os.path.join(run, "eval", "pareto.png")
  assert os.path.getsize(png) > 10_000 and "| rl | balanced |" in out.stdout


def newest_checkpoint(workdir):
  from orchestra.checkpoint import CheckpointManager
  with CheckpointManager(workdir, read_only=True) as manager:
    return manager.latest_step()


def test_killed_run_resumes_and_finishes(tmp_path):
  workdir = str(tmp_path / "run")
  stopper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_stop_after.py")
  one_rl_step = [*SHORT, "--config.rl.total_steps=1"]
  kill_at([sys.executable, stopper, "2", f"--config={CONFIG}", f"--workdir={workdir}",
           *one_rl_step], "CHECKPOINTED 2", env=ENV, timeout_s=300)   # SIGKILL at step 2
  resume_from = newest_checkpoint(workdir)
  assert resume_from == 2
  # The resume draws the progress bar (SHORT[-1] is --noprogress): the one run here that does.
  out = launch("train.py", f"--workdir={workdir}", *SHORT[:-1], "--config.rl.total_steps=1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {resume_from}" in out.stderr, out.stderr[-3000:]
  rows = steps(workdir)
  # Each step once: the rows the killed run wrote after its checkpoint are redone, not kept.
  assert [r["step"] for r in rows] == list(range(1, 6))
  assert [r["stage"] for r in rows] == ["sft"] * 4 + ["rl"]


def test_ppo_with_a_kl_penalty_trains_a_value_model_and_resumes_it(tmp_path):
  """PPO with a KL penalty against the frozen SFT policy, in one run (each is a full launch):
  the KL is 0 on the first RL step and grows after an update, the reference scores tokens as
  the exported SFT policy does under transformers, and the critic is checkpointed and
  restored on resume."""
  import numpy as np
  import torch
  from transformers import AutoModelForCausalLM
  from orchestra.checkpoint import SFT_DIR
  from orchestra.train.loop import make_reference
  from types import SimpleNamespace
  from ml_collections import ConfigDict
  ppo = [*SHORT, "--config.rl.algorithm=ppo", "--config.rl.loss.kl_coef=0.1",
         "--config.rl.std_threshold=0.0", "--config.rl.warmup_steps=0"]  # step 1: full lr
  out = launch("train.py", f"--workdir={tmp_path}", *ppo, "--config.rl.total_steps=2")
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "6", "value_params"))
  rl_rows = [r for r in steps(str(tmp_path)) if r["stage"] == "rl"]
  assert len(rl_rows) == 2 and all("loss" in r for r in rl_rows), rl_rows
  assert rl_rows[0]["kl"] < 1e-10          # the first RL step's policy is the reference
  assert rl_rows[1]["kl"] > 1e-7           # after one update it has moved

  # The reference scores tokens as the exported SFT policy does under transformers.
  hf_dir = str(tmp_path / "sft_hf")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export_hf.py"),
                        f"--workdir={tmp_path / SFT_DIR}", f"--out={hf_dir}", "--dtype=float32"],
                       capture_output=True, text=True, env=ENV, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  config = ConfigDict({"rl": {"loss": {"kl_coef": 0.1}}, "sft": {"steps": 4},
                       "model": {"dtype": "float32", "remat": "none", "attention": "dense",
                                 "logits_chunk": 1024}})
  reference = make_reference(SimpleNamespace(config=config), str(tmp_path), mesh=None)
  tokens = np.random.RandomState(0).randint(0, 1024, (2, 24)).astype(np.int32)
  ref_logp = np.asarray(reference.logprobs(tokens, np.ones_like(tokens, bool)))
  torch_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    logits = torch_model(torch.from_numpy(tokens).long()).logits
  picked = torch.log_softmax(logits[:, :-1], -1).gather(
      -1, torch.from_numpy(tokens[:, 1:, None]).long())[..., 0].numpy()
  np.testing.assert_allclose(ref_logp[:, 1:], picked, atol=2e-4)

  out = launch("train.py", f"--workdir={tmp_path}", *ppo)        # resumes at 6, critic restored
  assert out.returncode == 0, out.stderr[-3000:]
  assert "at step 6" in out.stderr, out.stderr[-3000:]
  rl_rows = [r for r in steps(str(tmp_path)) if r["stage"] == "rl"]
  assert [r["step"] for r in rl_rows] == [5, 6, 7]
  assert all("value_loss" in r and "sync_s" in r for r in rl_rows if "loss" in r)
  assert rl_rows[2]["kl"] > 1e-7


@pytest.mark.parametrize("override, message", [
    ("--config.rl.algorithm=ppo2", "config.rl.algorithm='ppo2'"),
    ("--config.rl.group_size=0", "config.rl.group_size=0"),
    ("--config.train_preferences=('greedy',)", "config.train_preferences names ['greedy']"),
    ("--config.rl.totl_steps=3", "totl_steps"),
    ("--config.episode.temperature=0", "config.episode.temperature=0.0 must be > 0"),
    ("--config.rl.loss.dual_clip=0.5", "config.rl.loss: dual_clip=0.5 must be > 1"),
    ("--config.rl.loss.kl_estimator=k4", "config.rl.loss: kl_estimator='k4'"),
    ("--config.rl.aggregation=sum", "config.rl.aggregation='sum'"),
    ("--config.episode.max_observation_tokens=0",
     "config.episode: max_observation_tokens=0 must be >= 1"),
    ("--config.rollout.engine=grpc", "config.rollout.engine='grpc'"),
])
def test_bad_configs_fail_naming_the_field(tmp_path, override, message):
  out = launch("train.py", f"--workdir={tmp_path}", "--dry_run", override, timeout=300)
  assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
