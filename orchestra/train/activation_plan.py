"""Activation memory per device of a run's training step, from the compiled step itself.

The policy loss's gradient (`policy_loss_fn` with the run's loss settings, the model's
`MemoryOptions`, float32 master parameters and the compute dtype) is compiled, never run,
for 1- and 2-layer proxies of the run's model at `episode.max_total_tokens`, with the rows
one device holds in a micro-batch; XLA's `memory_analysis()` gives each proxy's temporary
bytes, and the full depth is

    temp(L) = temp(1) + (L - 1) * (temp(2) - temp(1))

(each further layer adds what the second one added). The proxies hold whole matrices, as a
device holds one layer's gathered weights at a time under FSDP; what they compile for is
this machine's backend, so a GPU's figure can differ.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from orchestra.models import CausalLM, DecoderConfig, MemoryOptions
from orchestra.rl.update import PolicyLossConfig, policy_loss_fn
from orchestra.train.placement import PARAM_DTYPE, compute_dtype
from orchestra.train.setup_base import memory_options, policy_loss_config

GIB = 2 ** 30
ROWS_BUCKET = 16                       # the RL loop pads rows to lcm(16, micro x data-parallel)


def step_temp_bytes(decoder: DecoderConfig, memory: MemoryOptions, dtype, loss: PolicyLossConfig,
                    rows: int, tokens: int) -> int:
  """Temporary bytes of the compiled gradient of the policy loss for `rows` x `tokens`."""
  abstract = nnx.eval_shape(lambda: CausalLM(decoder, param_dtype=jnp.dtype(PARAM_DTYPE),
                                             dtype=dtype, memory=memory, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract)
  loss_fn = policy_loss_fn(loss)

  def loss_of(params, batch):
    return loss_fn(nnx.merge(graphdef, params), batch)[0]

  spec = lambda dt: jax.ShapeDtypeStruct((rows, tokens), dt)
  batch = {"tokens": spec(jnp.int32), "attention_mask": spec(jnp.bool_),
           "loss_mask": spec(jnp.bool_), "advantages": spec(jnp.float32),
           "behaviour_logp": spec(jnp.float32), "loss_weight": spec(jnp.float32),
           "token_weight": spec(jnp.float32)}
  if loss.kl_coef:
    batch["ref_logp"] = spec(jnp.float32)
  compiled = jax.jit(jax.grad(loss_of)).lower(params, batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def rows_per_device(config: ConfigDict, data_parallel: int) -> int:
  """Rows of one micro-batch on one device: the step's rows padded as the RL loop pads
  them, split into `rl.micro_batches`, then over the data-parallel devices."""
  split = config.rl.micro_batches * data_parallel
  multiple = math.lcm(ROWS_BUCKET, split)
  rows = -(-config.rl.tasks_per_step * config.rl.group_size // multiple) * multiple
  return rows // split


def activation_plan(decoder: DecoderConfig, config: ConfigDict, data_parallel: int) -> dict:
  """{"activation_gib_per_device", "activation_gib_per_layer", "rows_per_device",
  "tokens"}: the module docstring's estimate for this run."""
  rows, tokens = rows_per_device(config, data_parallel), config.episode.max_total_tokens
  temp = [step_temp_bytes(dataclasses.replace(decoder, num_layers=n), memory_options(config),
                          compute_dtype(config), policy_loss_config(config), rows, tokens)
          for n in (1, 2)]
  per_layer = max(temp[1] - temp[0], 0)
  total = temp[0] + (decoder.num_layers - 1) * per_layer
  return {"activation_gib_per_device": total / GIB, "activation_gib_per_layer": per_layer / GIB,
          "rows_per_device": rows, "tokens": tokens}
