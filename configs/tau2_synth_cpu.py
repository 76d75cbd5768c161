"""RL on synthesised domains: every domain launch/synthesize.py wrote, at once, offline on CPU.

  python launch/synthesize.py --config configs/synth_offline.py --out data/synth
  python launch/train.py --config configs/tau2_synth_cpu.py --workdir runs/synth

`env.domain = "all"` loads every declarative domain under `env.data/domains/`; each RL
step draws its tasks uniformly from the union of their train splits, and each episode
runs in its own domain (policy, tools, database), graded by tau2's evaluator. One domain:
`--config.env.domain=car_rental` (a name under env.data, or a domain folder).
Everything else is configs/tau2_retail_cpu.py's run, sized for these smaller domains.
"""

import importlib.util
import os

from ml_collections import ConfigDict

HERE = os.path.dirname(os.path.abspath(__file__))


def _retail():
  """configs/tau2_retail_cpu.py, whose run this one starts from."""
  spec = importlib.util.spec_from_file_location("tau2_retail_cpu",
                                                os.path.join(HERE, "tau2_retail_cpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config() -> ConfigDict:
  c = _retail().get_config()
  c.env.domain = "all"                         # every domain under data/domains/
  c.env.data = "data/synth"                    # launch/synthesize.py's --out
  c.env.max_steps = 20
  c.episode.max_turns = 8
  c.episode.max_total_tokens = 2048            # policy + ~10 tools + ticket + a few turns
  c.model.attention = "dense"                  # faster than blockwise up to ~800 tokens
  c.sft.num_demos = 160
  return c
