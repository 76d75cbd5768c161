"""Test setup: 8 forced host CPU devices (before JAX starts) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
  """Registers the `slow` marker."""
  config.addinivalue_line(
      "markers", "slow: starts launch/*.py as a subprocess or trains for more than ~50 steps; "
      "`pytest -m 'not slow'` leaves these out for a fast loop (CI runs everything)")
