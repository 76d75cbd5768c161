"""Weight sync: how rollout engines get the learner's new weights, behind one interface.

  WeightSync.push(model, version) -> metrics

`InProcessSync` hands the model to the in-process `JaxEngine`. `DiskSync` exports it
(`export_policy`: HF safetensors in `sync_dir/step_<version>`, written under a temporary
name and renamed, the newest two kept) and has every server reload the folder
(`HTTPEngine.update_weights`: pause -> reload_weights -> reset prefix cache -> weight
version -> resume, vLLM's routes). An in-memory transfer (vLLM's NCCL weight-transfer
engine, GPUs only) would be a third class with the same `push`.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Protocol

from orchestra.checkpoint import save_hf
from orchestra.engines.http_engine import HTTPEngine
from orchestra.engines.jax_engine import JaxEngine
from orchestra.models import CausalLM


class WeightSync(Protocol):
  async def push(self, model: CausalLM, version: int) -> dict[str, float]:
    """Makes every rollout engine sample with `model`'s weights, tagged `version`;
    returns metrics (`sync_s`, `weight_version`, ...)."""


class InProcessSync:
  """The in-process engine takes the model itself (no copy, no export)."""

  def __init__(self, engine: JaxEngine):
    self.engine = engine

  async def push(self, model: CausalLM, version: int) -> dict[str, float]:
    start = time.perf_counter()
    await self.engine.update_weights(model, version)
    return {"sync_s": time.perf_counter() - start, "weight_version": version}


def export_policy(model: CausalLM, sync_dir: str, version: int, tokenizer_dir: str, dtype: str,
                  keep: int = 2) -> str:
  """Writes `sync_dir/step_<version>` (HF safetensors under a temporary name, then renamed:
  a server never sees half a folder) and keeps it and the `keep - 1` newest before it.
  Exports of later versions are removed: they are a killed run's, past the checkpoint this
  run resumed from, and a restarted server must never load them."""
  path = os.path.join(sync_dir, f"step_{version}")
  save_hf(model, path, tokenizer_dir=tokenizer_dir, dtype=dtype)
  steps = _export_steps(sync_dir)
  older = [s for s in steps if s < version]
  stale = [s for s in steps if s > version] + older[:max(len(older) - (keep - 1), 0)]
  for old in stale:
    shutil.rmtree(os.path.join(sync_dir, f"step_{old}"), ignore_errors=True)
  return path


def _export_steps(sync_dir: str) -> list[int]:
  names = (n.removeprefix("step_") for n in os.listdir(sync_dir) if n.startswith("step_"))
  return sorted(int(n) for n in names if n.isdigit())


class DiskSync:
  """`export_policy`, then every server reloads the folder concurrently (pause -> reload ->
  reset prefix cache -> resume: `HTTPEngine.update_weights`)."""

  def __init__(self, engine: HTTPEngine, sync_dir: str, tokenizer_dir: str, dtype: str):
    self.engine, self.sync_dir, self.tokenizer_dir, self.dtype = (engine, sync_dir,
                                                                  tokenizer_dir, dtype)

  def newest(self) -> str:
    """The newest export (what a restarted server loads)."""
    return os.path.join(self.sync_dir, f"step_{_export_steps(self.sync_dir)[-1]}")

  async def push(self, model: CausalLM, version: int) -> dict[str, float]:
    start = time.perf_counter()
    path = export_policy(model, self.sync_dir, version, self.tokenizer_dir, self.dtype)
    exported = time.perf_counter()
    await self.engine.update_weights(path, version)
    return {"sync_s": time.perf_counter() - start, "export_s": exported - start,
            "reload_s": time.perf_counter() - exported, "weight_version": version}
