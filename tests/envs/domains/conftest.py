"""Fixtures for the tau2 domain tests: the shared data folder, loaded domains, gold replays.

The data lives outside the repository, at `<repo>/../shared/data/tau2` (CI runs a clone with
a copy of shared/ beside it); every test that needs it is skipped with a clear reason when
it is absent.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("ORCHESTRA_TAU2_DATA", REPO.parent / "shared" / "data" / "tau2"))


def _require_data() -> Path:
  if not (DATA / "domains" / "airline" / "db.json").is_file():
    pytest.skip(f"tau2 data not found at {DATA} (expected <repo>/../shared/data/tau2; "
                "set ORCHESTRA_TAU2_DATA to point elsewhere)")
  return DATA


@pytest.fixture(scope="session")
def tau2_data() -> Path:
  return _require_data()


@pytest.fixture(scope="session")
def domains(tau2_data):
  from orchestra.envs.domains import load_domain
  return {name: load_domain(name, tau2_data) for name in ("airline", "retail")}


@pytest.fixture(scope="session")
def gold_replays(domains):
  """{domain: [replay_gold record per task, tasks.json order]} -- computed once per session."""
  from orchestra.envs.domains.replay import replay_gold
  return {name: [replay_gold(d, t) for t in d.tasks] for name, d in domains.items()}
