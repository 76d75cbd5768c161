"""Saves step 1, then starts a large step-2 save and announces it (the test kills us).

  python interrupted_save.py WORKDIR
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax.numpy as jnp  # noqa: E402

from orchestra.checkpoint import CheckpointManager  # noqa: E402

workdir = sys.argv[1]
manager = CheckpointManager(workdir, async_save=False)
manager.save(1, {"params": {"w": jnp.arange(10.0)}}, {"data_position": 1})
big = {"w": jnp.arange(10.0), "big": jnp.ones((64, 1024, 1024), jnp.float32)}   # 256 MiB
print("SAVING", flush=True)
for step in range(2, 100):      # keep writing until the test kills the process
  manager.save(step, {"params": big}, {"data_position": step})
