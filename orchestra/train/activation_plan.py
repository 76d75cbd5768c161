"""Activation memory per device of a run's training step, from the compiled step itself.

The policy loss's gradient (`policy_loss_fn` with the run's loss settings, the model's
`MemoryOptions`, float32 master parameters and the compute dtype) is compiled, never run,
for 2- and 3-layer proxies of the run's model, with the rows one device holds in a
micro-batch, at `episode.max_total_tokens` T and at a short length t0; XLA's
`memory_analysis()` gives each one's temporary bytes. What grows with the sequence is

    act(n) = temp(n, T) - temp(n, t0)          (parameter-sized buffers cancel)
    per_layer = act(3) - act(2),   act(L) = act(2) + (L - 2) * per_layer

The parameter-sized buffers (gradients, the stacked layer copy of a scanned step) are
planned per device from the sharded parameters instead (`dry_run.memory_plan`): the proxies
hold whole matrices, a device 1/N of them. What the proxies compile for is this machine's
backend; a GPU's figure can differ.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from orchestra.models import CausalLM, DecoderConfig, MemoryOptions
from orchestra.models.fused_attention import fused_implementation
from orchestra.rl.update import PolicyLossConfig, policy_loss_fn
from orchestra.train.placement import PARAM_DTYPE, compute_dtype
from orchestra.train.setup_base import ConfigValueError, memory_options, policy_loss_config

GIB = 2 ** 30
ROWS_BUCKET = 16                       # the RL loop pads rows to lcm(16, micro x data-parallel)
SHORT_TOKENS = 128                     # t0


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


def proxy_memory_options(config: ConfigDict) -> MemoryOptions:
  """The run's `MemoryOptions` for the proxies. Off GPUs, "fused" attention compiles XLA's
  dense kernel, not cuDNN's flash one: the blockwise kernel (also linear in T) stands in."""
  memory = memory_options(config)
  if memory.attention == "fused" and fused_implementation() != "cudnn":
    memory = dataclasses.replace(memory, attention="blockwise")
  return memory


def activation_plan(decoder: DecoderConfig, config: ConfigDict, data_parallel: int) -> dict:
  """{"activation_gib_per_device", "activation_gib_per_layer", "rows_per_device",
  "tokens", "proxy_attention"}: the module docstring's estimate for this run."""
  rows, tokens = rows_per_device(config, data_parallel), config.episode.max_total_tokens
  if tokens <= SHORT_TOKENS:
    raise ConfigValueError(f"config.episode.max_total_tokens={tokens}: the activation plan "
                           f"needs more than {SHORT_TOKENS} (or run with "
                           "--nodry_run_activations)")
  memory = proxy_memory_options(config)

  def temp(layers: int, length: int) -> int:
    return step_temp_bytes(dataclasses.replace(decoder, num_layers=layers), memory,
                           compute_dtype(config), policy_loss_config(config), rows, length)

  act = {n: max(temp(n, tokens) - temp(n, SHORT_TOKENS), 0) for n in (2, 3)}
  per_layer = max(act[3] - act[2], 0)
  total = act[2] + (decoder.num_layers - 2) * per_layer
  return {"activation_gib_per_device": total / GIB, "activation_gib_per_layer": per_layer / GIB,
          "rows_per_device": rows, "tokens": tokens, "proxy_attention": memory.attention}
