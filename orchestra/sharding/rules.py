"""Logical-axis partition rules: parameter dimension names -> mesh axes.

Model code names each parameter dimension (`embed`, `heads`, `mlp`, ...);
these rules say which mesh axes split it. A dimension whose size is not
divisible by its mesh axes is replicated instead (and reported once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Mapping[str, MeshAxes]

BATCH_AXES = ("data", "fsdp")


def default_rules(shard_params_over_data: bool = True) -> dict[str, MeshAxes]:
  """The standard FSDP x tensor-parallel layout.

  `embed` is split over fsdp (and over data too, unless
  `shard_params_over_data=False`, i.e. hybrid sharding: params replicated
  across data-parallel groups, as across slow inter-node links); heads, kv
  heads, MLP hidden and vocabulary are split over `tensor`.
  """
  return {
      "embed": BATCH_AXES if shard_params_over_data else "fsdp",
      "vocab": "tensor",
      "heads": "tensor",
      "kv_heads": "tensor",
      "mlp": "tensor",
      "head_dim": None,
      "norm": None,
  }


def _axis_size(mesh: Mesh, axes: MeshAxes) -> int:
  if axes is None:
    return 1
  names = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in names)


_reported: set[tuple] = set()


def logical_to_spec(logical_axes, shape, mesh: Mesh, rules: Rules) -> PartitionSpec:
  """PartitionSpec for one array given its logical dimension names."""
  if logical_axes is None:
    return PartitionSpec()
  if len(logical_axes) != len(shape):
    raise ValueError(f"logical axes {logical_axes} do not match shape {shape}")
  spec = []
  for name, size in zip(logical_axes, shape):
    if name not in rules:
      raise KeyError(f"no partition rule for logical axis {name!r}; rules: {sorted(rules)}")
    axes = rules[name]
    if axes is not None and size % _axis_size(mesh, axes):
      key = (name, size, axes)
      if key not in _reported:
        _reported.add(key)
        logging.warning("axis %r of size %d is not divisible by mesh axes %s (size %d); "
                        "replicating it", name, size, axes, _axis_size(mesh, axes))
      axes = None
    spec.append(axes)
  return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh | None, rules: Rules | None = None) -> nnx.State:
  """NamedShardings with the structure of `state` (abstract or concrete).

  Variables without `logical_axes` metadata (e.g. RNG state) are replicated. Without a
  mesh, every variable goes to the default device (the unsharded path).
  """
  rules = default_rules() if rules is None else rules
  is_variable = lambda x: isinstance(x, nnx.Variable)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda _: device, state, is_leaf=is_variable)

  def to_sharding(variable):
    logical = variable.get_metadata().get("logical_axes")
    return NamedSharding(mesh, logical_to_spec(logical, variable.shape, mesh, rules))

  return jax.tree.map(to_sharding, state, is_leaf=is_variable)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over (data, fsdp), the rest replicated.

  The spec names only the first dimension, so one sharding serves arrays of
  any rank (and whole pytrees of them, as a jit sharding prefix).
  """
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))
