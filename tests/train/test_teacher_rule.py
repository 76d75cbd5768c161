"""The scripted teacher's rule of thumb for which expert a preference points to."""

import importlib.util
import os

from orchestra.envs import default_experts
from orchestra.train.setup import RunSetup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config():
  spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(ROOT, "configs",
                                                                         "tiny_cpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def setup_with(config):
  experts = {e.name: e for e in default_experts(0)}
  return RunSetup(config, env=None, tokenizer=None, real_tools={}, experts=experts,
                  model_config=None)


def test_preferred_expert_follows_declared_price_and_latency():
  setup = setup_with(tiny_config())
  # Prices (in + out per 1M): small 0.5, large 40, batch 8; latency: small 1, large 6, batch 60 s.
  # Cost or latency weighted: expert-small is both cheapest and fastest. Accuracy only: every
  # score is 0, and the tie goes to the most expensive expert.
  assert setup.preferred_expert("low_cost") == "expert-small"
  assert setup.preferred_expert("low_latency") == "expert-small"
  assert setup.preferred_expert("balanced") == "expert-small"
  assert setup.preferred_expert("high_accuracy") == "expert-large"


def test_preferred_expert_among_offered_tools_only():
  config = tiny_config()
  config.tools.names = ("code_interpreter", "expert-large", "expert-batch")
  # Scores over {large, batch}: cheapness large 0 / batch 1, speed large 1 / batch 0.
  config.preferences = {"cost": (0, 0, 0, 1, 1, 0), "speed": (0, 0, 0, 1, 0, 1),
                        "cost_heavy": (0, 0, 0, 1, 0.6, 0.4)}
  setup = setup_with(config)
  assert setup.preferred_expert("cost") == "expert-batch"
  assert setup.preferred_expert("speed") == "expert-large"
  assert setup.preferred_expert("cost_heavy") == "expert-batch"
