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


def test_preferred_expert_weighs_strength_price_and_latency():
  setup = setup_with(tiny_config())
  # Scaled over {small, large, batch}: strength (mean accuracy: 0.477, 0.97, 0.97) 0 / 1 / 1;
  # cheapness (in + out per 1M: 0.5, 40, 8) 1 / 0 / 0.81; speed (1, 6, 60 s) 1 / 0.915 / 0.
  # low_cost (1, 1, 0):      small 1,     large 1,     batch 1.81  -> batch
  # low_latency (1, 0, 1):   small 1,     large 1.915, batch 1     -> large
  # balanced (1, .5, .5):    small 1,     large 1.458, batch 1.405 -> large
  # high_accuracy (1, 0, 0): large and batch tie at 1; the tie goes to the pricier one.
  assert setup.preferred_expert("low_cost") == "expert-batch"
  assert setup.preferred_expert("low_latency") == "expert-large"
  assert setup.preferred_expert("balanced") == "expert-large"
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
