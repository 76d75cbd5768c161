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


class _CompileCounter:
  """XLA backend compilations in this process, counted from the first `count()` on (a
  `jax.monitoring` listener, registered then)."""
  EVENT = "/jax/core/compile/backend_compile_duration"
  seen = 0
  listening = False

  @classmethod
  def count(cls) -> int:
    if not cls.listening:
      import jax.monitoring
      jax.monitoring.register_event_duration_secs_listener(cls._on_event)
      cls.listening = True
    return cls.seen

  @classmethod
  def _on_event(cls, event: str, duration_s: float, **kwargs) -> None:
    if event == cls.EVENT:
      cls.seen += 1


def steady_s(fn, repeats: int = 2, max_warmups: int = 8) -> tuple[float, int]:
  """(the fastest of `repeats` timed calls of `fn`, warm-up calls made): calls `fn` until one
  compiles nothing new (at most `max_warmups` times) first. For workloads whose shapes
  depend on timing (requests falling into batches), where one warm-up call leaves programs
  to compile in the timed ones."""
  warmups = 0
  while warmups < max_warmups:
    before = _CompileCounter.count()
    fn()
    warmups += 1
    if _CompileCounter.count() == before:
      break
  return fastest_s(fn, repeats), warmups
