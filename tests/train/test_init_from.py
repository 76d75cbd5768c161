"""Training from a Hugging Face starting policy (`config.model.init_from`).

The folder is a tiny random Qwen3 saved by `transformers` with a Qwen3-style chat template
of its own (tests/qwen3_folder_fixture.py), so the tests tell the folder's template from ours.
"""

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from compiled import forward
from qwen3_folder_fixture import SHAPE, TEMPLATE, THINK_OFF, hf_folder, tiny_config  # noqa: F401

from orchestra.agent.chat_format import render_prompt
from orchestra.engines import JaxEngine, SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def overrides(folder: str, vocab: int) -> list[str]:
  return [f"--config.model.init_from={folder}", f"--config.model.vocab_size={vocab}",
          *(f"--config.model.{k}={v}" for k, v in SHAPE.items()),
          "--config.episode.turn_tokens=24"]


def test_config_model_must_describe_the_folder(hf_folder, tmp_path):
  folder, vocab = hf_folder
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={CONFIG}", f"--workdir={tmp_path}", "--dry_run",
                        *overrides(folder, vocab), "--config.model.hidden_size=64"],
                       capture_output=True, text=True, env=ENV, timeout=300)
  assert out.returncode != 0
  assert "config.model.hidden_size=64 but" in out.stderr


def test_episode_prompt_is_the_folders_chat_template(hf_folder, tmp_path):
  from orchestra.train.loop import starting_policy
  from orchestra.train.setup import build_setup
  folder, vocab = hf_folder
  config = tiny_config()
  config.model.update(init_from=folder, vocab_size=vocab, **SHAPE)
  setup = build_setup(config, str(tmp_path))
  assert setup.tokenizer.chat_template == TEMPLATE
  assert setup.model_config.stop_token_ids == (setup.tokenizer.eos_token_id,)
  model = starting_policy(config, setup.model_config, mesh=None)
  task = setup.tasks("train")[0]
  rollout = asyncio.run(setup.rollout(JaxEngine(model), task, "low_cost",
                                      SamplingParams(max_tokens=8, temperature=1.0, seed=0)))
  messages = setup.messages(task, "low_cost")
  schemas = [t.schema() for t in setup.tools_for(task).values()]
  expected = setup.tokenizer.apply_chat_template(messages, tools=schemas,
                                                 add_generation_prompt=True, tokenize=True)
  expected = list(getattr(expected, "input_ids", expected))
  prompt = rollout.trajectory.token_ids[:len(expected)]
  assert list(prompt) == expected
  assert setup.tokenizer.decode(expected).endswith(THINK_OFF)
  assert expected != setup.tokenizer.encode(render_prompt(messages, schemas))
  # The starting weights are the folder's: logits agree with transformers.
  import torch
  from transformers import AutoModelForCausalLM
  tokens = np.asarray([expected[:32]], np.int32)
  ours = np.asarray(forward(model, tokens))
  with torch.no_grad():
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(
        torch.from_numpy(tokens).long()).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_trains_from_the_folder(hf_folder, tmp_path):
  import json
  folder, vocab = hf_folder
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={CONFIG}", f"--workdir={tmp_path}", "--noprogress",
                        *overrides(folder, vocab), "--config.sft.steps=0",
                        "--config.rl.total_steps=2", "--config.rl.tasks_per_step=2",
                        "--config.rl.group_size=2", "--config.rl.loss.kl_coef=0.1",
                        "--config.rl.std_threshold=0.0", "--config.rl.warmup_steps=0",
                        "--config.checkpoint.every=1"],
                       capture_output=True, text=True, env=ENV, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["stage"] for r in rows] == ["rl", "rl"]
  # No SFT stage: the KL reference is the starting policy, where RL starts.
  assert rows[0]["kl"] < 1e-10 and rows[1]["kl"] > 1e-9
  from transformers import AutoTokenizer
  saved = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True)
  assert saved.chat_template == TEMPLATE        # servers and exports get the folder's template
