"""Device meshes, logical-axis partition rules and sharded model functions."""

from orchestra.sharding.mesh import MESH_AXES, MeshError, make_mesh, resolve_mesh_shape
from orchestra.sharding.partition import make_forward, make_value_and_grad, shard_model, sharded_init
from orchestra.sharding.rules import BATCH_AXES, batch_sharding, default_rules, logical_to_spec, state_shardings

__all__ = [
    "BATCH_AXES", "MESH_AXES", "MeshError", "batch_sharding", "default_rules", "logical_to_spec",
    "make_forward", "make_mesh", "make_value_and_grad", "resolve_mesh_shape", "shard_model",
    "sharded_init", "state_shardings",
]
