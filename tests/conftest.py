"""Test setup: 8 forced host CPU devices (before JAX starts) and shared fixtures."""

import collections
import os
import shutil
import tempfile

from orchestra.host_memory import host_allocator_environ

# The suite is compile-bound (tiny models, many distinct programs): XLA's CPU backend at
# optimization level 0 compiles ~35% faster, and the matmuls and convolutions it runs are
# library calls that level 0 leaves alone. Results stay within the tests' tolerances, and
# every subprocess a test starts inherits these flags. Launch scripts and the library keep
# XLA's defaults. A level the user sets in XLA_FLAGS wins.
TEST_XLA_FLAGS = "--xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  TEST_XLA_FLAGS += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The host allocator the launch scripts restart themselves with (`orchestra/host_memory.py`:
# mimalloc preloaded, keeping XLA:CPU's per-call buffers between calls): the pytest workers
# and every subprocess inherit it; this process started without it.
os.environ.update(host_allocator_environ() or {})
# Compiled programs (this process's and every launch/*.py the tests start) go to a folder
# of this session, removed at its end, not to the user's ~/.cache.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="xla-")
# Every program is cached, however fast it compiled: the launches the tests start run the
# same tiny shapes again and again (a warm launch 18.2 -> 16.6 s against the 0.2 s default).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_configure(config):
  """Registers the `slow` marker."""
  config.addinivalue_line(
      "markers", "slow: starts launch/*.py as a subprocess or trains for more than ~50 steps; "
      "`pytest -m 'not slow'` leaves these out for a fast loop (CI runs everything)")


def pytest_collection_modifyitems(config, items):
  """Modules with the most `slow` tests (launch/*.py runs of a minute or two) first, each
  module's tests in their own order: pytest-xdist's `--dist loadscope` hands whole modules
  to the workers in this order, so the long ones overlap early and the short ones even out
  the end, instead of tests/train/ (the longest) starting last."""
  del config
  slow = collections.Counter(item.module.__name__ for item in items
                             if item.get_closest_marker("slow") is not None)
  items.sort(key=lambda item: -slow[item.module.__name__])      # stable within a module


def pytest_unconfigure(config):
  """Removes the session's compilation cache (when this session made it)."""
  del config
  if _SESSION_CACHE is not None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
