"""launch/train.py that stops dead once checkpoint step N is on disk, for the kill test.

  python train_stop_after.py N [launch/train.py flags ...]

Once the run's own checkpoint of step N is complete (`CheckpointManager.save` then
`wait`), it prints "CHECKPOINTED N" and waits on stdin, holding the training loop, so no
later step runs; the test then SIGKILLs it. If stdin closes first (the test died), it
exits 3.
"""

import os
import runpy
import sys

from stop_point import halt

from orchestra.checkpoint import manager

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "launch", "train.py")
STOP_AT = int(sys.argv[1])
_save = manager.CheckpointManager.save


def save_then_stop(self, step, items, metadata):
  _save(self, step, items, metadata)
  if step == STOP_AT and self.directory.endswith(os.path.join("run", "checkpoints")):
    self.wait()
    halt(f"CHECKPOINTED {step}")


manager.CheckpointManager.save = save_then_stop
sys.argv = [TRAIN, *sys.argv[2:]]
runpy.run_path(TRAIN, run_name="__main__")
