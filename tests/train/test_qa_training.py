"""The paper's setting, shrunk to CPU: `configs/qwen3_1p7b_grpo.py` with a tiny Qwen3 folder as
`model.init_from`, QA files, the code interpreter and an LLM expert behind a real
OpenAI-compatible server (`launch/serve.py` with a bearer key), bfloat16 compute on a
(data 2, fsdp 2) mesh of forced CPU devices. Only sizes, tools and endpoints are overridden.
"""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from qwen3_folder_fixture import SHAPE, hf_folder  # noqa: F401
from serve_fixture import serve

from orchestra.agent.episode import ScriptedEngine
from orchestra.engines import SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_CONFIG = os.path.join(ROOT, "configs", "qwen3_1p7b_grpo.py")
QUESTIONS = [{"question": f"What is {a} plus {b}?", "answer": str(a + b)}
             for a, b in [(2, 3), (7, 5), (11, 4), (6, 9), (13, 8), (3, 14)]]
KEY = "test-expert-key"
pytestmark = pytest.mark.slow            # starts launch/serve.py (and launch/*.py)

SHRUNK = """
import importlib.util
_spec = importlib.util.spec_from_file_location("paper", {paper!r})
_paper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_paper)


def get_config():
  c = _paper.get_config()
  c.model.update(init_from={folder!r}, vocab_size={vocab}, rope_theta=10_000.0,
                 tie_word_embeddings=False, **{shape!r})
  c.env.update(benchmark="jsonl", data={train!r}, test_data={test!r})
  c.tools.names = ("code_interpreter", "answer-1")
  c.tools.llm = dict({{"answer-1": dict(model="expert", base_url={url!r} + "/v1",
                                        api_key_env="EXPERT_API_KEY", price_in_per_1m=0.8,
                                        price_out_per_1m=0.8, max_tokens=8,
                                        description="Open generalist for final answers.")}})
  c.preferences = dict(balanced=(0.0, 0.0, 1.0, 0.5, 0.5), low_cost=(0.0, 0.0, 1.0, 2.0, 0.0),
                       high_accuracy=(0.0, 0.0, 1.0, 0.0, 0.0))
  c.mesh.update(shape=(2, -1, 1), num_devices=4)
  c.rollout.update({rollout})
  c.episode.update(max_turns=3, turn_tokens=24, max_total_tokens=2048,
                   max_observation_tokens=128)
  c.rl.update(total_steps=2, tasks_per_step=2, group_size=2, micro_batches=2,
              std_threshold=0.0, max_concurrent_episodes=8, learning_rate=1e-3,
              invalid_format="zero")         # a random policy writes no valid call
  c.checkpoint.every = 1
  c.eval.update(num_tasks=2)
  return c
"""


@pytest.fixture(scope="module")
def expert_url(hf_folder):
  """An OpenAI-compatible server for the expert, answering only with the bearer key."""
  os.environ["EXPERT_API_KEY"] = KEY
  try:
    with serve(hf_folder[0], "--served_model_name=expert", "--api_key_env=EXPERT_API_KEY") as (
        url, _):
      yield url
  finally:
    del os.environ["EXPERT_API_KEY"]


IN_PROCESS = dict(engine="jax")
ONE_SERVER = dict(engine="http", server="orchestra", launch=1, urls=(), sync_dir="")


def write_config(tmp_path, hf_folder, expert_url, rollout=IN_PROCESS) -> str:
  folder, vocab = hf_folder
  paths = {}
  for split, rows in (("train", QUESTIONS[:4]), ("test", QUESTIONS[4:])):
    paths[split] = str(tmp_path / f"{split}.jsonl")
    with open(paths[split], "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  path = tmp_path / "shrunk_paper.py"
  path.write_text(SHRUNK.format(paper=PAPER_CONFIG, folder=folder, vocab=vocab, shape=SHAPE,
                                train=paths["train"], test=paths["test"], url=expert_url,
                                rollout=rollout))
  return str(path)


@pytest.fixture
def shrunk_config(hf_folder, expert_url, tmp_path):
  return write_config(tmp_path, hf_folder, expert_url)


def load(path):
  spec = importlib.util.spec_from_file_location("shrunk", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_a_qa_episode_asks_the_expert_and_is_graded(shrunk_config, tmp_path):
  from orchestra.train.setup import build_setup
  setup = build_setup(load(shrunk_config), str(tmp_path / "run"))
  item = setup.tasks("train")[1]                     # What is 7 plus 5?

  def rollout(answer):
    turns = [("answer-1", {"prompt": item.question}), ("answer", {"answer": answer})]
    return asyncio.run(setup.rollout(ScriptedEngine(setup.tokenizer, turns), item, "balanced",
                                     SamplingParams()))

  right, wrong = rollout("12"), rollout("13")
  assert right.correct and not wrong.correct
  traj = right.trajectory
  assert traj.tool_calls == {"answer-1": 1, "answer": 1}
  assert "error" not in traj.turns[0].observation.lower()[:40], traj.turns[0].observation
  assert traj.cost_usd > 0                           # the expert's tokens at its prices
  # The prompt is the folder's chat template over the messages and tool schemas.
  schemas = [t.schema() for t in setup.tools.values()]
  expected = setup.tokenizer.apply_chat_template(setup.messages(item, "balanced"), tools=schemas,
                                                 add_generation_prompt=True, tokenize=True)
  expected = list(getattr(expected, "input_ids", expected))
  assert list(traj.token_ids[:len(expected)]) == expected
  assert "7 plus 5" in setup.tokenizer.decode(expected)


def test_the_shrunk_paper_config_trains_resumes_and_evaluates(shrunk_config, tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  workdir = str(tmp_path / "run")

  def launch(script, *args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", script),
                          f"--config={shrunk_config}", f"--workdir={workdir}", *args],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out

  launch("train.py", "--noprogress")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["stage"] for r in rows] == ["rl", "rl"]
  assert all("loss" in r and np.isfinite(r["loss"]) for r in rows), rows
  assert rows[0]["kl"] < 1e-3 and rows[1]["kl"] > 0          # the reference: the starting policy
  assert all(r["stale_turns"] == 0 for r in rows)
  from orchestra.checkpoint.export import restore_policy
  from flax import nnx
  model, step = restore_policy(workdir)
  assert step == 2
  dtypes = {str(v.dtype) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  assert dtypes == {"float32"}                       # master weights; compute was bfloat16
  # A rerun finds the run complete; evaluation runs the RL policy on the test file.
  out = launch("train.py", "--noprogress")
  assert "resuming rl at step 2" in out.stderr
  launch("eval.py")
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    report = json.load(f)
  rows = report["rows"] if isinstance(report, dict) else report
  assert {(r["policy"], r["preference"]) for r in rows} == {
      ("rl", p) for p in ("balanced", "low_cost", "high_accuracy")}


def test_the_shrunk_paper_config_trains_over_a_launched_server(hf_folder, expert_url, tmp_path):
  """As the paper config runs on GPUs: rollouts on a server the run starts, weights synced
  after each update from the sharded learner, exported in the compute dtype."""
  config = write_config(tmp_path, hf_folder, expert_url, ONE_SERVER)
  workdir = tmp_path / "run"
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={config}", f"--workdir={workdir}", "--noprogress"],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [(r["stage"], r["weight_version"], r["stale_turns"]) for r in rows] == [
      ("rl", 1, 0), ("rl", 2, 0)]
  with open(workdir / "weight_sync" / "step_2" / "config.json") as f:
    assert json.load(f)["dtype"] == "bfloat16"
