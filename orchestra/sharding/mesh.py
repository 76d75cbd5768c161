"""Device meshes with the three axes every Orchestra job uses.

`data`   pure data parallelism (the batch is split; with HSDP params are replicated),
`fsdp`   fully-sharded data parallelism (batch and parameters are split),
`tensor` tensor parallelism (heads, MLP hidden and vocabulary are split).
Any axis may have size 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


class MeshError(ValueError):
  """A mesh shape that does not fit the available devices."""


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with at most one -1 filled in from `num_devices`."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise MeshError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise MeshError(f"mesh shape {shape}: entries must be positive, with at most one -1")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
      raise MeshError(f"mesh shape {shape}: {num_devices} devices are not divisible by {known}")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise MeshError(
        f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
        f"but {num_devices} are available (set one entry to -1 to fill the rest)")
  return shape


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices).

  The default (1, -1, 1) shards everything over all devices (FSDP).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  # jax.make_mesh orders devices by physical topology (rings on TPU, NVLink on GPU).
  return jax.make_mesh(shape, MESH_AXES, devices=devices,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES))
