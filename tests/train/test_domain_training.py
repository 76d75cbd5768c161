"""A tau2-format domain as RL tasks: the toy ToolScale domain through train, eval and resume;
the teacher and the reward on retail's real tasks; config errors."""

import asyncio
import importlib.util
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from data_paths import TAU2, require_data
from toy_domain import write_data

from orchestra.agent.episode import ScriptedEngine
from orchestra.engines import SamplingParams
from orchestra.envs.domains.conversation import Reply
from orchestra.train.setup import build_setup
from orchestra.train.setup_base import ConfigValueError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tau2_retail_cpu.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
SMALL = dict(model=dict(num_layers=1, hidden_size=64, intermediate_size=128, vocab_size=600),
             episode=dict(max_turns=4, turn_tokens=24, max_total_tokens=768))


def load_config(**overrides):
  spec = importlib.util.spec_from_file_location("tau2_cfg", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for section, values in overrides.items():
    for key, value in values.items():
      config[section][key] = value
  return config


@pytest.fixture
def library_dir(tmp_path_factory):
  """The toy domain's data, a fresh folder per test (a test may add files to it)."""
  return str(write_data(tmp_path_factory.mktemp("library")))


def toy_flags(data):
  return ["--config.env.domain=toy_domain", f"--config.env.data={data}",
          "--config.model.num_layers=1", "--config.model.hidden_size=64",
          "--config.model.intermediate_size=128", "--config.model.vocab_size=600",
          "--config.episode.max_turns=4", "--config.episode.turn_tokens=24",
          "--config.episode.max_total_tokens=768", "--config.sft.steps=3",
          "--config.sft.num_demos=8", "--config.sft.batch_size=4", "--config.rl.total_steps=2",
          "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
          "--config.rl.std_threshold=0.0", "--config.checkpoint.every=2", "--noprogress"]


def launch(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), f"--config={CONFIG}",
                         *args], capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.slow
def test_train_eval_and_resume_on_a_custom_domain(tmp_path, library_dir):
  workdir = str(tmp_path / "run")
  out = launch("train.py", f"--workdir={workdir}", *toy_flags(library_dir))
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["stage"] for r in rows] == ["sft"] * 3 + ["rl"] * 2
  assert rows[2]["nll"] < rows[0]["nll"]
  for r in rows[3:]:
    assert {"reward", "accuracy", "cost_usd", "latency_s", "format_ok", "generated_tokens"} <= set(r)
    assert r["generated_tokens"] > 0 and r["cost_usd"] > 0
  # rerunning with more RL steps resumes from step 5
  out = launch("train.py", f"--workdir={workdir}", *toy_flags(library_dir),
               "--config.rl.total_steps=3")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]

  out = launch("eval.py", f"--workdir={workdir}", *toy_flags(library_dir)[:-1])
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  assert {(r["policy"], r["preference"]) for r in report} == {("rl", "balanced"),
                                                              ("sft", "balanced")}
  assert all(r["n"] == 2 and 0.0 <= r["accuracy"] <= 1.0 for r in report)


def test_teacher_demos_score_one_and_wrong_actions_score_zero(tmp_path, library_dir):
  setup = build_setup(load_config(env=dict(domain="toy_domain", data=library_dir), **SMALL),
                      str(tmp_path))
  assert setup.tool_names == () and len(setup.tasks("train")) == 4
  for task in setup.tasks("train"):
    turns = setup.teacher_turns(task, "balanced", random.Random(0))
    assert asyncio.run(setup.demo(task, "balanced", turns)) is not None
  task = setup.tasks("train")[0]
  wrong = [("find_book", {"title": "Dune"}), ("lend_book", {"member_id": "m2", "book_id": "b1"}),
           "Lent b1."]
  rollout = asyncio.run(setup.rollout(ScriptedEngine(setup.tokenizer, wrong), task, "low_cost",
                                      SamplingParams()))
  assert not rollout.correct and rollout.trajectory.tool_calls == {"find_book": 1,
                                                                   "lend_book": 1}
  assert "Priority: low cost." in setup.tokenizer.decode(rollout.trajectory.token_ids)


def test_an_llm_user_simulator_talks_to_the_policy(tmp_path, library_dir):
  config = load_config(env=dict(domain="toy_domain", data=library_dir, user="llm",
                                user_url="http://127.0.0.1:9/v1", user_model="sim"), **SMALL)
  with pytest.raises(ConfigValueError, match="guidelines not found"):
    build_setup(config, str(tmp_path))           # the toy data has no user_simulator/ folder
  guide = os.path.join(library_dir, "user_simulator")
  os.makedirs(guide, exist_ok=True)
  with open(os.path.join(guide, "simulation_guidelines.md"), "w") as f:
    f.write("You are a library user.")
  setup = build_setup(config, str(tmp_path))

  class Simulator:                               # stands in for the ChatEndpoint
    seen = []

    async def chat(self, messages, **kwargs):
      self.seen.append(messages)
      text = "I am m1 and want Dune." if len(messages) == 2 else "###STOP###"
      return Reply(text, [], cost_usd=0.5)

  setup.user_model = Simulator()
  turns = [("find_book", {"title": "Dune"}), ("lend_book", {"member_id": "m1", "book_id": "b1"}),
           "Lent b1."]
  rollout = asyncio.run(setup.rollout(ScriptedEngine(setup.tokenizer, turns),
                                      setup.tasks("train")[0], "balanced", SamplingParams()))
  assert rollout.correct
  assert "I am m1 and want Dune." in setup.tokenizer.decode(rollout.trajectory.token_ids)
  assert Simulator.seen[0][0]["content"].startswith("You are a library user.")
  assert rollout.trajectory.cost_usd < 0.5       # the simulator's bill is not the agent's


def test_retail_gold_demos_reach_reward_one(tmp_path):
  require_data(TAU2 / "domains" / "retail", "tau2 data",
               "expected <repo>/../shared/data/tau2; set ORCHESTRA_TAU2_DATA to point elsewhere")
  config = load_config(env=dict(data=str(TAU2)))
  setup = build_setup(config, str(tmp_path))
  tasks = setup.tasks("train")[:12]

  async def demos():
    return await asyncio.gather(*(setup.demo(t, "balanced", setup.teacher_turns(t, "balanced",
                                                                                None))
                                  for t in tasks))

  trajs = asyncio.run(demos())
  assert all(t is not None for t in trajs), [t.id for t, d in zip(tasks, trajs) if d is None]
  lengths = np.asarray([len(t.token_ids) for t in trajs])
  assert lengths.max() <= config.episode.max_total_tokens


@pytest.mark.parametrize("overrides, message", [
    (dict(env=dict(user="oracle")), "config.env.user='oracle'"),
    (dict(env=dict(user="llm")), "config.env.user='llm' needs config.env.user_url"),
    (dict(env=dict(domain="telecom")), "unknown domain 'telecom'"),
    (dict(tools=dict(names=("call_expert",))), "have no spec in config.tools.llm"),
    (dict(eval=dict(split="dev")), "needs split 'dev'"),
])
def test_bad_domain_configs_name_the_field(tmp_path, library_dir, overrides, message):
  overrides.setdefault("env", {}).setdefault("domain", "toy_domain")
  overrides["env"].setdefault("data", library_dir)
  config = load_config(**overrides)
  if "tools" in overrides:
    config.preferences = {k: (0.0, *v) for k, v in config.preferences.items()}
  with pytest.raises(ConfigValueError, match=message):
    build_setup(config, str(tmp_path))
