"""Where tests find the data kept beside the repository, and what a missing file does.

The QA benchmark files and the tau2 domains are not copied into the repository: they live
in `<repo>/../shared/data` (CI clones the repository with a copy of shared/ beside it).
Every test that needs them gets its path through `require_data`:

- with ORCHESTRA_REQUIRE_DATA=1 (`.ci/run` sets it) a missing path fails the test, naming
  the path, so a CI run without the data cannot pass by skipping;
- otherwise the test is skipped with that reason (`pytest -rs` lists the reasons).

Skips about the machine (no mount namespace, no GPU) are not data and stay plain skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BENCHMARKS = SHARED_DATA / "benchmarks"
TAU2 = Path(os.environ.get("ORCHESTRA_TAU2_DATA", SHARED_DATA / "tau2"))
REQUIRE_DATA_ENV = "ORCHESTRA_REQUIRE_DATA"


def data_required() -> bool:
  """True when ORCHESTRA_REQUIRE_DATA is set to anything but '', '0', 'false' or 'no'."""
  return os.environ.get(REQUIRE_DATA_ENV, "").strip().lower() not in ("", "0", "false", "no")


def require_data(path: str | os.PathLike, what: str, hint: str = "") -> Path:
  """Returns `path` if it exists; else fails (ORCHESTRA_REQUIRE_DATA set) or skips the test.

  Args:
    path: the file or folder the test reads.
    what: what it is, for the message (e.g. "tau2 data").
    hint: how to provide it, appended to the message.
  """
  path = Path(path)
  if path.exists():
    return path
  message = f"{what} not found: {path} is missing" + (f" ({hint})" if hint else "")
  if data_required():
    pytest.fail(f"{message}; {REQUIRE_DATA_ENV} is set, so missing data is an error",
                pytrace=False)
  pytest.skip(message)
