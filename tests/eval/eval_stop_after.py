"""launch/eval.py that stops dead after its Nth result line, for the kill-and-resume test.

  python eval_stop_after.py N [launch/eval.py flags ...]

Once the Nth record is on disk (`ResultsStore.append` returned) it prints
"STOPPED AFTER N RESULTS" and waits on stdin, holding the event loop, so no further item
runs; the test then SIGKILLs it. The kill thus lands at a known point (exactly N complete
lines) instead of after a guessed delay. If stdin closes first (the test died), it exits 3.
"""

import os
import runpy
import sys

from stop_point import halt

from orchestra.eval import results_store

EVAL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "launch", "eval.py")
STOP_AFTER = int(sys.argv[1])
_append = results_store.ResultsStore.append
_count = 0


def append_then_stop(self, record):
  global _count
  _append(self, record)
  _count += 1
  if _count == STOP_AFTER:
    halt(f"STOPPED AFTER {_count} RESULTS")


results_store.ResultsStore.append = append_then_stop
sys.argv = [EVAL, *sys.argv[2:]]
runpy.run_path(EVAL, run_name="__main__")
