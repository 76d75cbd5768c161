"""Training checkpoint (orbax) -> Hugging Face folder.

Contract with the training loop: the policy's `nnx.Param` state is saved as
the item `params`, and `DecoderConfig.to_dict()` as metadata `model_config`.
"""

from __future__ import annotations

import os

import jax
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from orchestra.checkpoint.errors import CheckpointError, StepNotRestored
from orchestra.checkpoint.hf import save_hf
from orchestra.checkpoint.manager import CheckpointManager
from orchestra.models.config import DecoderConfig, MemoryOptions
from orchestra.models.decoder import CausalLM
from orchestra.sharding.rules import state_shardings

PARAMS_ITEM = "params"
MODEL_CONFIG_KEY = "model_config"


def restore_policy(workdir: str | os.PathLike, step: int | None = None, *,
                   mesh: Mesh | None = None, compute_dtype="float32",
                   memory: MemoryOptions = MemoryOptions()) -> tuple[CausalLM, int]:
  """The `CausalLM` saved at `step` of a run, and that step.

  Without `step`, the newest step that reads: a damaged newest step is skipped with a
  warning naming it, and the one before is used. With `mesh`, each device reads only
  its shards of the parameters (`orchestra.sharding.state_shardings`); otherwise they
  go to the default device. `compute_dtype` is the restored model's activation dtype,
  `memory` its `MemoryOptions`.
  """
  manager = CheckpointManager(workdir, async_save=False, read_only=True)
  try:
    if step is not None:
      return _restore_policy(manager, step, mesh, compute_dtype, memory), step
    steps = manager.all_steps()
    if not steps:
      raise CheckpointError(f"no complete checkpoint in {manager.directory}")
    for candidate in reversed(steps):
      try:
        return _restore_policy(manager, candidate, mesh, compute_dtype, memory), candidate
      except StepNotRestored as e:
        if candidate == steps[0]:
          raise
        logging.warning("skipping checkpoint step %d: %s", candidate, e)
  finally:
    manager.close()


def _restore_policy(manager: CheckpointManager, step: int, mesh: Mesh | None,
                    compute_dtype, memory: MemoryOptions) -> CausalLM:
  meta = manager.restore_metadata(step)
  if MODEL_CONFIG_KEY not in meta:
    raise CheckpointError(f"{manager.directory}/{step}: metadata has no {MODEL_CONFIG_KEY!r}; "
                          "was it written by an Orchestra training run?")
  cfg = DecoderConfig.from_dict(meta[MODEL_CONFIG_KEY])
  abstract = nnx.eval_shape(lambda: CausalLM(cfg, dtype=compute_dtype, memory=memory,
                                             rngs=nnx.Rngs(0)))
  graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
  is_variable = lambda x: isinstance(x, nnx.Variable)
  shardings = state_shardings(abstract_params, mesh)
  like = jax.tree.map(
      lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
      abstract_params, shardings, is_leaf=is_variable)
  items, _ = manager.restore({PARAMS_ITEM: like}, step)
  return nnx.merge(graphdef, items[PARAMS_ITEM], rest)


def export_checkpoint(workdir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      step: int | None = None, dtype: str = "bfloat16",
                      tokenizer_dir: str | None = None) -> str:
  """Writes the policy of `step` (default newest) as a Hugging Face folder."""
  model, _ = restore_policy(workdir, step)
  return save_hf(model, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype)
