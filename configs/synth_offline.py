"""Offline synthesis: procedural domains and verified tasks, no model (same seed, same bytes).

  python launch/synthesize.py --config configs/synth_offline.py --out data/synth
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  return ConfigDict(dict(
      generator="procedural",    # seeded templates (orchestra/synth/procedural.py)
      seed=0,                    # same seed, same bytes
      num_domains=8,             # 12 themes; beyond that, numbered variants of them
      tasks_per_domain=50,       # verified tasks kept per domain
      oversample=2.0,            # task drafts proposed per task kept (duplicates are dropped)
      test_fraction=0.2,         # share of each domain's tasks in split "test"
      concurrency=4,             # domains in flight
  ))
