"""Wall-clock timing shared by the benchmark scripts (run as `python bench/<script>.py`, so
this folder is on `sys.path`)."""

from __future__ import annotations

import statistics
import time


def call_seconds(fn, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls of `fn`."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def median_s(fn, repeats: int = 3) -> float:
  """The median of `repeats` timed calls of `fn` after one warm-up call (compilation)."""
  fn()
  return statistics.median(call_seconds(fn, repeats))


def fastest_s(fn, repeats: int) -> float:
  """The fastest of `repeats` timed calls of `fn` (no warm-up: the first may compile)."""
  return min(call_seconds(fn, repeats))
