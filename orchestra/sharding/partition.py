"""Sharded model creation and jitted forward / gradient functions.

All functions take the model as (graphdef, state) so jit sees plain pytrees
and explicit shardings: parameters by `state_shardings`, batches split over
(data, fsdp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from orchestra.sharding.rules import Rules, batch_sharding, state_shardings


def sharded_init(make_model: Callable[[], nnx.Module], mesh: Mesh,
                 rules: Rules | None = None) -> nnx.Module:
  """Builds a model whose parameters are created directly on their shards.

  The full model is never materialised on one device: initialisation runs
  under jit with `out_shardings`, so each device computes only its shard.
  """
  abstract = nnx.eval_shape(make_model)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = state_shardings(abstract_state, mesh, rules)

  def init():
    return nnx.split(make_model())[1]

  state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
  """Moves an existing model's state onto its shards (in place) and returns it."""
  state = nnx.state(model)
  nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
  return model


def make_forward(model: nnx.Module, mesh: Mesh, rules: Rules | None = None):
  """forward(state, input_ids_BT, attention_mask_BT) -> model output, jitted and sharded.

  Returns (forward, state): the state placed on its shards.
  """
  graphdef, state = nnx.split(model)
  shardings = state_shardings(state, mesh, rules)
  state = jax.device_put(state, shardings)
  batch = batch_sharding(mesh)

  def forward(state, input_ids_BT, attention_mask_BT):
    return nnx.merge(graphdef, state)(input_ids_BT, attention_mask_BT)

  jitted = jax.jit(forward, in_shardings=(shardings, batch, batch), out_shardings=batch)
  return jitted, state


def make_value_and_grad(model: nnx.Module, loss_fn: Callable[[nnx.Module, Any], jax.Array],
                        mesh: Mesh, rules: Rules | None = None):
  """value_and_grad(params, rest, batch) -> (loss, grads) with grads sharded like params.

  `loss_fn(model, batch)` returns a scalar; `batch` is a dict of [B, ...]
  arrays split over (data, fsdp). Only `nnx.Param` variables are
  differentiated; returns (fn, params, rest) with both states on their shards.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  param_shardings = state_shardings(params, mesh, rules)
  rest_shardings = state_shardings(rest, mesh, rules)
  params = jax.device_put(params, param_shardings)
  rest = jax.device_put(rest, rest_shardings)

  def value_and_grad(params, rest, batch):
    def loss(p):
      return loss_fn(nnx.merge(graphdef, p, rest), batch)
    return jax.value_and_grad(loss)(params)

  jitted = jax.jit(value_and_grad,
                   in_shardings=(param_shardings, rest_shardings, batch_sharding(mesh)),
                   out_shardings=(None, param_shardings))
  return jitted, params, rest
