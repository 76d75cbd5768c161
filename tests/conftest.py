"""Test setup: 8 forced host CPU devices (before JAX starts) and shared fixtures."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Compiled programs (this process's and every launch/*.py the tests start) go to a folder
# of this session, removed at its end, not to the user's ~/.cache.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="xla-")


def pytest_configure(config):
  """Registers the `slow` marker."""
  config.addinivalue_line(
      "markers", "slow: starts launch/*.py as a subprocess or trains for more than ~50 steps; "
      "`pytest -m 'not slow'` leaves these out for a fast loop (CI runs everything)")


def pytest_unconfigure(config):
  """Removes the session's compilation cache (when this session made it)."""
  del config
  if _SESSION_CACHE is not None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
