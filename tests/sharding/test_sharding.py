"""Sharded forward/gradient equal the single-device result on 8 host devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward
from flax import nnx
from hf_fixtures import make_hf_model, padded_batch

from orchestra.checkpoint import load_hf

from orchestra.models import CausalLM, DecoderConfig
from orchestra.sharding import (MeshError, default_rules, make_forward, make_mesh,
                                make_value_and_grad, resolve_mesh_shape, sharded_init,
                                state_shardings)

MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]


def cross_entropy(model, batch):
  logits = model(batch["ids"], batch["mask"])[:, :-1]
  targets = batch["ids"][:, 1:]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  weights = batch["mask"][:, 1:].astype(jnp.float32)
  return (nll * weights).sum() / weights.sum()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  assert jax.device_count() == 8, "conftest must force 8 host devices"
  path = tmp_path_factory.mktemp("qwen3")
  make_hf_model("qwen3", path)
  ids, mask, _ = padded_batch(128, batch=8, length=16, pad_left=5)
  batch = {"ids": jnp.asarray(ids), "mask": jnp.asarray(mask)}
  model = load_hf(path)
  logits = np.asarray(forward(model, batch["ids"], batch["mask"]))
  loss, grads = nnx.jit(nnx.value_and_grad(cross_entropy))(model, batch)
  flat_grads = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
  return path, batch, logits, float(loss), flat_grads


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_forward_and_grad_equal_single_device(setup, shape):
  path, batch, ref_logits, ref_loss, ref_grads = setup
  mesh = make_mesh(shape)
  model = load_hf(path, mesh=mesh)
  forward, state = make_forward(model, mesh)
  logits = forward(state, batch["ids"], batch["mask"])
  np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=0)

  value_and_grad, params, rest = make_value_and_grad(model, cross_entropy, mesh)
  loss, grads = value_and_grad(params, rest, batch)
  assert abs(float(loss) - ref_loss) < 1e-5
  expected_shardings = dict(nnx.to_flat_state(state_shardings(params, mesh)))
  for path_, grad in nnx.to_flat_state(grads):
    assert grad[...].sharding.is_equivalent_to(expected_shardings[path_], grad[...].ndim), path_
    np.testing.assert_allclose(np.asarray(grad[...]), ref_grads[path_], atol=1e-5, rtol=0,
                               err_msg=str(path_))


@pytest.mark.parametrize("shape", [(1, 8, 1), (2, 2, 2)])
def test_each_device_holds_an_eighth_of_the_parameters(setup, shape):
  path = setup[0]
  mesh = make_mesh(shape)
  model = load_hf(path, mesh=mesh)
  total = per_device = 0
  for p, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    array = variable[...]
    shard_shape = array.sharding.shard_shape(array.shape)
    assert all(s.data.shape == shard_shape for s in array.addressable_shards)
    if array.ndim >= 2:   # every matrix is split 8 ways; only norm vectors are replicated
      assert math.prod(shard_shape) * 8 == array.size, (p, shape, shard_shape)
    total += array.size
    per_device += math.prod(shard_shape)
  assert per_device <= 1.05 * total / 8, (per_device, total)


def test_hybrid_sharding_replicates_params_over_data(setup):
  mesh = make_mesh((2, 2, 2))
  model = load_hf(setup[0], mesh=mesh, rules=default_rules(shard_params_over_data=False))
  q = model.model.layers[0].attn.q_proj[...]      # [D, H, E]: D over fsdp, H over tensor
  assert q.sharding.shard_shape(q.shape) == (q.shape[0] // 2, q.shape[1] // 2, q.shape[2])


def test_sharded_load_equals_unsharded_load(setup):
  path = setup[0]
  plain = dict(nnx.to_flat_state(nnx.state(load_hf(path), nnx.Param)))
  sharded = load_hf(path, mesh=make_mesh((2, 2, 2)))
  for p, variable in nnx.to_flat_state(nnx.state(sharded, nnx.Param)):
    np.testing.assert_array_equal(np.asarray(variable[...]), np.asarray(plain[p][...]))


def test_sharded_init_creates_params_on_their_shards():
  cfg = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=1,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
  mesh = make_mesh((1, -1, 1))
  model = sharded_init(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)), mesh)
  embed = model.model.embed[...]
  assert embed.sharding.shard_shape(embed.shape) == (64, 4)
  reference = CausalLM(cfg, rngs=nnx.Rngs(0))    # eager init: same values up to 1 ulp
  np.testing.assert_allclose(np.asarray(embed), np.asarray(reference.model.embed[...]), rtol=1e-6)


def test_indivisible_axes_are_replicated():
  cfg = DecoderConfig("llama", vocab_size=60, hidden_size=24, intermediate_size=40, num_layers=1,
                      num_heads=6, num_kv_heads=3, head_dim=4)
  mesh = make_mesh((1, 1, 8))
  model = sharded_init(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)), mesh)
  k = model.model.layers[0].attn.k_proj[...]       # 3 kv heads cannot split 8 ways
  assert k.sharding.shard_shape(k.shape) == k.shape
  gate = model.model.layers[0].mlp.gate_proj[...]  # 40 = 8 * 5 splits fine
  assert gate.sharding.shard_shape(gate.shape) == (24, 5)


def test_mesh_shape_errors_name_the_problem():
  assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(MeshError, match="needs 16 devices"):
    resolve_mesh_shape((2, 8, 1), 8)
  with pytest.raises(MeshError, match="at most one -1"):
    resolve_mesh_shape((-1, -1, 1), 8)
  with pytest.raises(MeshError, match="3 entries"):
    resolve_mesh_shape((8, 1), 8)
