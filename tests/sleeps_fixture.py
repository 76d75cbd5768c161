"""`sleeps`: a fixture that records `asyncio.sleep` delays instead of sleeping.

Retry tests check a backoff schedule exactly (`sleeps == [0.5, 1.0]`) and spend no time
on it. Use it with `from sleeps_fixture import sleeps  # noqa: F401`.
"""

import asyncio

import pytest

REAL_SLEEP = asyncio.sleep


@pytest.fixture
def sleeps(monkeypatch):
  """Replaces asyncio.sleep for one test: each delay > 0 is recorded, not slept (0 still yields)."""
  slept = []

  async def fake_sleep(delay, result=None):
    if delay > 0:
      slept.append(delay)
    await REAL_SLEEP(0)
    return result

  monkeypatch.setattr(asyncio, "sleep", fake_sleep)
  return slept
