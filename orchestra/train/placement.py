"""Where a run's models live: the device mesh of `config.mesh`, and the compute dtype.

Parameters (and AdamW's moments) are always float32: the master weights an update
adds small steps to. `config.model.dtype` is the compute dtype of activations and
matmuls (bfloat16 for real runs); attention softmax, RMSNorm statistics and the
logits stay float32 (orchestra/models/decoder.py). Exports to rollout servers and
Hugging Face folders are written in `config.model.dtype`, the serving dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import ConfigDict

from orchestra.sharding import make_mesh
from orchestra.train.setup_base import ConfigValueError, mesh_devices

PARAM_DTYPE = "float32"


def compute_dtype(config: ConfigDict):
  """`config.model.dtype` as a JAX dtype."""
  return jnp.dtype(config.model.dtype)


def run_mesh(config: ConfigDict) -> Mesh | None:
  """The (data, fsdp, tensor) mesh of `config.mesh` over the first `num_devices` devices
  (0: all JAX sees); None for a single device, the unsharded path."""
  n = mesh_devices(config)
  if n > jax.device_count():
    raise ConfigValueError(f"config.mesh.num_devices={n}, but JAX sees {jax.device_count()} "
                           f"{jax.default_backend()} devices")
  if jax.process_count() > 1 and n != jax.device_count():
    raise ConfigValueError(f"config.mesh.num_devices={n}: a run over {jax.process_count()} "
                           f"processes spans all {jax.device_count()} devices (set it to 0)")
  if n == 1:
    return None
  return make_mesh(config.mesh.shape, jax.devices()[:n])


def data_parallel_size(mesh: Mesh | None) -> int:
  """How many ways a batch's rows are split (data x fsdp): batches are padded to a
  multiple of it."""
  return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
