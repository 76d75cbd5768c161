"""Saves step 1, then stops in the middle of the step-2 save and waits to be killed.

  python interrupted_save.py WORKDIR

Step 2's arrays and metadata are written into orbax's temporary folder; just before orbax
finalizes it (renames it to `2`), a hook prints "IN SAVE" and waits on stdin, so the test's
SIGKILL lands inside the save at a known point instead of after a guessed delay. If the hook
never runs (orbax changed how it commits a step), the script prints "SAVED" and exits 0, and
the test fails saying so. If stdin closes first (the test died), it exits 3.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax.numpy as jnp  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from orchestra.checkpoint import CheckpointManager  # noqa: E402
from stop_point import halt  # noqa: E402

workdir = sys.argv[1]
manager = CheckpointManager(workdir, async_save=False)
manager.save(1, {"params": {"w": jnp.arange(10.0)}}, {"data_position": 1})


def stop_before_finalize(self, directory):
  halt("IN SAVE")


ocp.CompositeCheckpointHandler.finalize = stop_before_finalize
big = {"w": jnp.arange(10.0), "big": jnp.ones((4, 1024, 1024), jnp.float32)}   # 16 MiB
manager.save(2, {"params": big}, {"data_position": 2})
print("SAVED", flush=True)
