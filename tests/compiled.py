"""Model calls compiled as one XLA program, for tests.

Eager JAX compiles every primitive separately for each new shape, so a test that runs a
small model eagerly spends most of its time compiling: a 2-layer model's gradient took
4.5x longer eagerly than under one `nnx.jit` on 2 CPU cores. Tests therefore call models
through `forward` (or wrap their own functions in `nnx.jit`); the computation is the same.
"""

from flax import nnx


@nnx.jit
def forward(model, *args):
  """`model(*args)` (ids, then the optional mask and positions), compiled per shape."""
  return model(*args)


@nnx.jit
def forward_with_cache(model, *args):
  """`model.forward_with_cache(*args)`, compiled per shape."""
  return model.forward_with_cache(*args)
