"""Kill a child process at a known point instead of after a guessed delay.

The child calls `halt(marker)` where it should die (inside a save, after the Nth result):
it prints the marker and blocks on stdin. The test's `kill_at(args, marker)` starts it,
reads its output up to the marker and SIGKILLs it there. A child that ends or hangs
before the marker fails the test (a watchdog kills a hung one).
"""

import os
import signal
import subprocess
import sys
import threading

import pytest


def halt(marker: str):
  """In the child: announce the stop point and wait to be killed (exit 3 if stdin closes)."""
  print(marker, flush=True)
  sys.stdin.read()            # returns only at EOF: the test kills us before that
  os._exit(3)


def kill_at(args: list[str], marker: str, *, env=None, timeout_s: float = 240,
            on_marker=None) -> str:
  """Runs `args` until a stdout line contains `marker`, SIGKILLs it; returns its output.

  `on_marker()` runs while the child is stopped at the marker (e.g. to look at its files).
  """
  proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(timeout_s, proc.kill)
  watchdog.start()
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if marker in line:
        break
    else:
      pytest.fail(f"the child ended (or hung for {timeout_s:.0f} s) before {marker!r}:\n"
                  + "".join(lines)[-3000:])
    if on_marker is not None:
      on_marker()
    proc.kill()
    output = "".join(lines) + proc.communicate(timeout=60)[0]
  finally:
    watchdog.cancel()
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL, output
  return output
