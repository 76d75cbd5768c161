"""The paper configs share tiny_cpu's schema; --dry_run plans them without a GPU, a real launch
without a checkpoint says what it needs (tests/train/test_qa_training.py runs one, shrunk)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.parametrize("name, params, per_device", [("qwen3_8b_grpo", "8,190.74M", "1.91 GiB"),
                                                      ("qwen3_1p7b_grpo", "1,720.57M", "6.41 GiB")])
def test_paper_config_dry_run(name, params, per_device, tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("CHECKPOINT_PATH", "INDEX_DIR", "EXPERT_API_KEY", "TAVILY_API_KEY")}
  env["PYTHONPATH"] = os.pathsep.join(sys.path)
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={os.path.join(ROOT, 'configs', name + '.py')}", "--dry_run",
                        "--nodry_run_activations",
                        "--config.rl.total_steps=7"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout
  assert f"{params} params" in text and f"{per_device} of params per device" in text
  assert "tools: answer, answer-1, answer-math-1, code_interpreter, reasoner-1, reasoner-2, " \
         "search-1" in text
  assert "--logprobs-mode processed_logprobs" in text
  assert "CHECKPOINT_PATH" in text and "EXPERT_API_KEY" in text        # reported, not hidden
  assert "INDEX_DIR" in text and "TRAIN_DATA" in text
  run = json.loads(text.strip().splitlines()[-1])
  assert run["rl"]["total_steps"] == 7 and run["rollout"]["engine"] == "http"
  assert run["plan"]["num_devices"] == (16 if name == "qwen3_8b_grpo" else 1)


@pytest.mark.slow
def test_paper_config_without_a_checkpoint_names_what_it_needs(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "CHECKPOINT_PATH"}
  env["PYTHONPATH"] = os.pathsep.join(sys.path)
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={os.path.join(ROOT, 'configs', 'qwen3_8b_grpo.py')}",
                        f"--workdir={tmp_path}"], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode != 0 and "set config.model.init_from (CHECKPOINT_PATH)" in out.stderr
  assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_unknown_config_field_fails_with_its_name():
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={os.path.join(ROOT, 'configs', 'qwen3_8b_grpo.py')}",
                        "--dry_run", "--config.rl.totl_steps=3"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode != 0 and "totl_steps" in out.stderr
