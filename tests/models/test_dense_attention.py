"""Dense attention's hand-written backward pass equals autodiff of the textbook formula; the
KV cache's forward (keys transposed) equals the formula too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra.models.dense_attention import attend_cache_dense, attend_kv_major


def _reference(q_BTHE, k_BKSE, v_BKSE, mask_BTS):
  """softmax(q k^T / sqrt(E) + mask) v per query head, in float32, differentiated by JAX."""
  b, t, h, e = q_BTHE.shape
  g = h // k_BKSE.shape[1]
  k_BSHE = jnp.repeat(k_BKSE, g, axis=1).transpose(0, 2, 1, 3).astype(jnp.float32)
  v_BSHE = jnp.repeat(v_BKSE, g, axis=1).transpose(0, 2, 1, 3).astype(jnp.float32)
  scores_BHTS = jnp.einsum("bthe,bshe->bhts", q_BTHE.astype(jnp.float32), k_BSHE) / np.sqrt(e)
  scores_BHTS = jnp.where(mask_BTS[:, None], scores_BHTS, jnp.finfo(jnp.float32).min)
  return jnp.einsum("bhts,bshe->bthe", jax.nn.softmax(scores_BHTS, axis=-1), v_BSHE)


def _inputs(t, s, dtype, seed=0):
  """GQA (4 query heads on 2 kv heads); row 0 left-padded, row 1 a random mask, row 2 has a
  query that sees no key (a padding query: the uniform average, gradient 0 for its scores)."""
  kq, kk, kv, km, kd = jax.random.split(jax.random.key(seed), 5)
  q = jax.random.normal(kq, (3, t, 4, 8)).astype(dtype)
  k = jax.random.normal(kk, (3, 2, s, 8)).astype(dtype)
  v = jax.random.normal(kv, (3, 2, s, 8)).astype(dtype)
  causal_TS = np.arange(s)[None, :] <= s - t + np.arange(t)[:, None]
  mask = np.broadcast_to(causal_TS, (3, t, s)).copy()
  mask[0, :, :3] = False
  mask[1] &= np.asarray(jax.random.bernoulli(km, 0.6, (t, s)))
  mask[2, 0] = False
  d_out = jax.random.normal(kd, (3, t, 4, 8)).astype(dtype)
  return q, k, v, jnp.asarray(mask), d_out


def _value_and_grads(fn, q, k, v, mask, d_out):
  loss = lambda q, k, v: (fn(q, k, v, mask).astype(jnp.float32) * d_out).sum()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("t,s", [(9, 9), (5, 13), (1, 7)])
def test_gradients_equal_autodiff_float32(t, s):
  inputs = _inputs(t, s, jnp.float32)
  out, grads = _value_and_grads(attend_kv_major, *inputs)
  want_out, want_grads = _value_and_grads(_reference, *inputs)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
  for name, got, want in zip("qkv", grads, want_grads, strict=True):
    assert got.dtype == jnp.float32, name
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("t,s", [(1, 7), (5, 13)])
def test_cache_layout_forward_equals_the_formula(t, s):
  """`attend_cache_dense` reads keys as the KV cache holds them, [B, K, E, S]."""
  q, k, v, mask, _ = _inputs(t, s, jnp.float32, seed=3)
  got = jax.jit(attend_cache_dense)(q, jnp.swapaxes(k, 2, 3), v, mask)
  np.testing.assert_allclose(got, _reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_are_close_to_float32():
  """bfloat16 inputs: gradients in bfloat16, within its precision of the float32 reference."""
  inputs = _inputs(16, 16, jnp.bfloat16, seed=1)
  _, grads = _value_and_grads(attend_kv_major, *inputs)
  f32 = [x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in inputs]
  _, want_grads = _value_and_grads(_reference, *f32)
  for name, got, want in zip("qkv", grads, want_grads, strict=True):
    assert got.dtype == jnp.bfloat16, name
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=0.02 * scale, err_msg=name)


def test_second_call_under_remat_and_scan_matches():
  """The custom VJP composes with `jax.checkpoint` inside a `lax.scan` (the remat path)."""
  q, k, v, mask, d_out = _inputs(6, 6, jnp.float32, seed=2)

  def stacked(q, k, v, mask):
    step = jax.checkpoint(lambda x, _: (attend_kv_major(x, k, v, mask), None))
    return jax.lax.scan(step, q, None, length=2)[0]

  def reference(q, k, v, mask):
    return _reference(_reference(q, k, v, mask), k, v, mask)
  _, grads = _value_and_grads(stacked, q, k, v, mask, d_out)
  _, want = _value_and_grads(reference, q, k, v, mask, d_out)
  for name, got, ref in zip("qkv", grads, want, strict=True):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=name)
