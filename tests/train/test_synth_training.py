"""Training on synthesised domains: `env.domain = "all"` draws tasks across every domain the
pipeline wrote, each episode in its own domain, through launch/train.py for 2 RL steps."""

import asyncio
import importlib.util
import json
import os
import random
import subprocess
import sys

import pytest

from orchestra.synth.pipeline import SynthSettings, synthesize
from orchestra.synth.procedural import ProceduralGenerator
from orchestra.train.setup import build_setup
from orchestra.train.setup_base import ConfigValueError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tau2_synth_cpu.py")
TINY = ["--config.model.num_layers=1", "--config.model.hidden_size=64",
        "--config.model.intermediate_size=128", "--config.model.vocab_size=800",
        "--config.episode.max_turns=4", "--config.episode.turn_tokens=24",
        "--config.episode.max_total_tokens=1536", "--config.sft.steps=2",
        "--config.sft.num_demos=6", "--config.sft.batch_size=2", "--config.rl.total_steps=2",
        "--config.rl.tasks_per_step=2", "--config.rl.group_size=2",
        "--config.rl.std_threshold=0.0", "--noprogress"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("synth")
  asyncio.run(synthesize(ProceduralGenerator(0), SynthSettings(num_domains=3, tasks_per_domain=6),
                         out))
  return str(out)


def load_config(**env):
  spec = importlib.util.spec_from_file_location("tau2_synth_cpu", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.env.update(env)
  config.model.update(dict(num_layers=1, hidden_size=64, intermediate_size=128, vocab_size=800))
  return config


def test_all_domains_share_one_run_and_each_episode_runs_in_its_own(tmp_path, synth_dir):
  setup = build_setup(load_config(data=synth_dir), str(tmp_path))
  tasks = setup.tasks("train")
  assert len({t.domain.name for t in tasks}) == 3 and len(tasks) == 3 * 5
  assert len({t.id for t in tasks}) == len(tasks)
  for item in tasks[::4]:
    turns = setup.teacher_turns(item, "balanced", random.Random(0))
    demo = asyncio.run(setup.demo(item, "balanced", turns))
    assert demo is not None, item.id                      # gold actions reach reward 1
    text = setup.tokenizer.decode(demo.token_ids)
    assert item.domain.policy.splitlines()[0] in text
    assert item.domain.toolkit_cls.tool_names()[0] in text
  one = build_setup(load_config(data=synth_dir, domain=tasks[0].domain.name), str(tmp_path / "one"))
  assert {t.domain.name for t in one.tasks("train")} == {tasks[0].domain.name}


def test_all_with_no_synthesised_domain_is_refused(tmp_path):
  with pytest.raises(ConfigValueError, match="no declarative domain folder"):
    build_setup(load_config(data=str(tmp_path)), str(tmp_path))


@pytest.mark.slow
def test_a_synthesised_run_trains_two_rl_steps_through_the_launcher(tmp_path, synth_dir):
  workdir = tmp_path / "run"
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={CONFIG}", f"--workdir={workdir}",
                        f"--config.env.data={synth_dir}", *TINY],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["stage"] for r in rows] == ["sft", "sft", "rl", "rl"]
  assert all(r["generated_tokens"] > 0 for r in rows[2:])
