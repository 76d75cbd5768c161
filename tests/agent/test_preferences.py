"""Preference vectors rendered into the instruction; the vllm launch command."""

import os
import subprocess
import sys

import pytest

from orchestra.agent.preferences import preference_instruction

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_preference_instruction_states_every_weight():
  text = preference_instruction([0.0, 0.5, 1.0, 0.3, 0.1], ["local_search", "expert-1"])
  assert text == ("User preferences (weights; higher = matters more): accuracy 1, low cost 0.3, "
                  "low latency 0.1. Priority: low cost. Preferred tools: expert-1 0.5.")
  with pytest.raises(ValueError, match="expected 5"):
    preference_instruction([1.0, 1.0], ["local_search", "expert-1"])


@pytest.mark.parametrize("cost, latency, gist", [
    (0.0, 0.0, "accuracy only"), (1.0, 0.0, "low cost"), (0.2, 0.7, "low latency"),
    (0.5, 0.5, "low cost and low latency")])
def test_priority_names_the_heavier_of_cost_and_latency(cost, latency, gist):
  assert f"Priority: {gist}." in preference_instruction([1.0, cost, latency], [])


@pytest.mark.slow
def test_vllm_server_prints_the_rl_command():
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "vllm_server.py"),
                        "--model_dir=/ckpt/step_5", "--tp=2", "--port=9001"],
                       capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().startswith("VLLM_SERVER_DEV_MODE=1 vllm serve /ckpt/step_5 --port 9001")
  assert "--logprobs-mode processed_logprobs" in out.stdout and "--tensor-parallel-size 2" in out.stdout
