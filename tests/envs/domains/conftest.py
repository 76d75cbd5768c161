"""Fixtures for the tau2 domain tests: the shared data folder, loaded domains, gold replays.

The data lives outside the repository, at `<repo>/../shared/data/tau2` (CI runs a clone with
a copy of shared/ beside it); every test that needs it goes through `data_paths.require_data`:
skipped with a clear reason when it is absent, failed when ORCHESTRA_REQUIRE_DATA is set (CI).
"""

from pathlib import Path

import pytest
from data_paths import TAU2, require_data


@pytest.fixture(scope="session")
def tau2_data() -> Path:
  require_data(TAU2 / "domains" / "airline" / "db.json", "tau2 data",
               "expected <repo>/../shared/data/tau2; set ORCHESTRA_TAU2_DATA to point elsewhere")
  return TAU2


@pytest.fixture(scope="session")
def domains(tau2_data):
  from orchestra.envs.domains import load_domain
  return {name: load_domain(name, tau2_data) for name in ("airline", "retail")}


@pytest.fixture(scope="session")
def gold_replays(domains):
  """{domain: [replay_gold record per task, tasks.json order]} -- computed once per session."""
  from orchestra.envs.domains.replay import replay_gold
  return {name: [replay_gold(d, t) for t in d.tasks] for name, d in domains.items()}
