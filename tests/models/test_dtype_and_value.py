"""bf16 compute path, the value model, and config validation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from compiled import forward
from hf_fixtures import make_hf_model, padded_batch

from orchestra.checkpoint import load_hf

from orchestra.models import CausalLM, ConfigError, DecoderConfig, MemoryOptions, ValueModel


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen3")
  make_hf_model("qwen3", path)
  return path


def test_bf16_compute_is_close_to_fp32(qwen3_dir):
  ids, mask, _ = padded_batch(128)
  f32 = np.asarray(forward(load_hf(qwen3_dir), jnp.asarray(ids), jnp.asarray(mask)))
  for dtype, compute in (("float32", "bfloat16"), ("bfloat16", "bfloat16")):
    model = load_hf(qwen3_dir, dtype=dtype, compute_dtype=compute)
    assert model.model.embed[...].dtype == jnp.dtype(dtype)
    logits = forward(model, jnp.asarray(ids), jnp.asarray(mask))
    assert logits.dtype == jnp.float32     # logits are always accumulated in fp32
    real = mask.astype(bool)
    err = np.abs(np.asarray(logits)[real] - f32[real]).max()
    assert 0 < err < 0.05 * np.abs(f32).max(), err


def test_bf16_gradient_is_finite(qwen3_dir):
  model = load_hf(qwen3_dir, dtype="bfloat16")
  ids, mask, _ = padded_batch(128)

  def loss(m):
    return jnp.mean(m(jnp.asarray(ids), jnp.asarray(mask)) ** 2)

  grads = nnx.jit(nnx.grad(loss))(model)
  leaves = jax.tree.leaves(grads)
  assert all(g.dtype == jnp.bfloat16 and bool(jnp.isfinite(g).all()) for g in leaves)


def test_value_model_shares_the_policy_backbone(qwen3_dir):
  policy = load_hf(qwen3_dir)
  critic = load_hf(qwen3_dir, value_model=True)
  assert isinstance(critic, ValueModel)
  ids, mask, _ = padded_batch(128)
  values = forward(critic, jnp.asarray(ids), jnp.asarray(mask))
  assert values.shape == ids.shape and values.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(values), 0.0)   # zero-initialised head
  critic.value_head[...] = jnp.ones_like(critic.value_head[...])
  hidden, _ = forward(policy.model, jnp.asarray(ids), jnp.asarray(mask))
  values = np.asarray(forward(critic, jnp.asarray(ids), jnp.asarray(mask)))
  # values[:, t] reads the hidden state at t - 1 (the state before token t); 0 is the bias.
  np.testing.assert_allclose(values[:, 1:], np.asarray(hidden.sum(-1))[:, :-1], atol=1e-4)
  np.testing.assert_array_equal(values[:, 0], 0.0)


def test_value_at_t_does_not_see_token_t_or_later():
  """Contract: values[:, t] is V of the state before token t."""
  cfg = DecoderConfig("qwen3", vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=4)
  critic = ValueModel(cfg, rngs=nnx.Rngs(0))
  critic.value_head[...] = jax.random.normal(jax.random.key(1), critic.value_head[...].shape)
  critic.value_bias[...] = jnp.asarray(0.5)
  ids = np.asarray(jax.random.randint(jax.random.key(2), (2, 12), 0, 32))
  values = np.asarray(forward(critic, jnp.asarray(ids)))
  assert np.all(values[:, 0] == 0.5)                    # no state yet: the learned bias
  for t in (1, 5, 10):
    changed = ids.copy()
    changed[:, t:] = (changed[:, t:] + 7) % 32          # token t and everything after it
    other = np.asarray(forward(critic, jnp.asarray(changed)))
    np.testing.assert_array_equal(other[:, :t + 1], values[:, :t + 1])
    assert np.abs(other[:, t + 1:] - values[:, t + 1:]).max() > 1e-4   # later values do see it


def test_random_init_model_runs_with_remat():
  cfg = DecoderConfig("qwen3", vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
  plain = CausalLM(cfg, rngs=nnx.Rngs(0))
  remat = CausalLM(cfg, memory=MemoryOptions(remat="full"), rngs=nnx.Rngs(0))
  ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
  grad = nnx.jit(nnx.grad(lambda m: m(ids).mean()))
  for a, b in zip(jax.tree.leaves(grad(plain)), jax.tree.leaves(grad(remat)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  n = sum(x.size for x in jax.tree.leaves(nnx.state(plain, nnx.Param)))
  assert n == cfg.num_params


def _write_config(tmp_path, **fields):
  base = dict(model_type="qwen3", vocab_size=32, hidden_size=16, intermediate_size=24,
              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  base.update(fields)
  (tmp_path / "config.json").write_text(json.dumps(base))
  return tmp_path


@pytest.mark.parametrize("fields, message", [
    (dict(model_type="gpt2"), "model_type='gpt2' is not supported"),
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(layer_types=["sliding_attention"]), "layer_types"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type='yarn'"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(num_key_value_heads=3), "multiple of"),
])
def test_unsupported_configs_fail_with_the_field_named(tmp_path, fields, message):
  with pytest.raises(ConfigError, match=message):
    DecoderConfig.from_hf_dir(_write_config(tmp_path, **fields))


def test_transformers4_style_rope_fields_are_read(tmp_path):
  path = _write_config(tmp_path, model_type="llama", rope_theta=500000.0, head_dim=None,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192})
  cfg = DecoderConfig.from_hf_dir(path)
  assert cfg.rope.theta == 500000.0 and cfg.rope.rope_type == "llama3"
  assert cfg.head_dim == 4 and not cfg.qk_norm


def test_missing_folder_and_weights_are_clear_errors(tmp_path):
  from orchestra.checkpoint import CheckpointError
  with pytest.raises(ConfigError, match="config.json not found"):
    load_hf(tmp_path / "nope")
  with pytest.raises(CheckpointError, match="no model.safetensors"):
    load_hf(_write_config(tmp_path))
