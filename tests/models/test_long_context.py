"""Long-context training step: blockwise attention and chunked log-probs equal the dense
path (outputs and gradients), and the compiled step's memory grows linearly in T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward
from flax import nnx

from orchestra.models import CausalLM, DecoderConfig, MemoryOptions
from orchestra.models.blockwise_attention import attend_blockwise, attend_cache_blockwise
from orchestra.models.decoder import attend
from orchestra.models.dense_attention import attend_kv_major
from orchestra.models.fused_attention import attend_fused
from orchestra.models.token_stats import token_stats
from orchestra.rl.losses import token_entropy, token_logprobs

CFG = DecoderConfig("qwen3", vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def _masks(b, t):
  """Row 0 left-padded by 5, row 1 right-padded by 7, row 2 full."""
  mask = np.ones((b, t), bool)
  mask[0, :5] = False
  mask[1, t - 7:] = False
  return jnp.asarray(mask)


@jax.jit
def _dense(q, k, v, key_mask):
  t = q.shape[1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  return attend(q, k, v, key_mask[:, None, :] & causal[None])


# Each compiled as one program (tests/compiled.py says why); the block size is a shape.
_blockwise = jax.jit(attend_blockwise, static_argnums=4)
_cache_blockwise = jax.jit(attend_cache_blockwise, static_argnums=4)
_kv_major = jax.jit(attend_kv_major)
_fused = jax.jit(attend_fused, static_argnums=4)


def _grads(f, *args):
  """d/d(q, k, v) of f(q, k, v), compiled."""
  return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)


@pytest.mark.parametrize("t,block", [(37, 8), (64, 16), (20, 64)])
def test_blockwise_attention_equals_dense_outputs_and_gradients(t, block):
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(kq, (3, t, 4, 8))
  k, v = jax.random.normal(kk, (3, t, 2, 8)), jax.random.normal(kv, (3, t, 2, 8))
  mask = _masks(3, t)
  real = mask[:, :, None, None]           # padding queries' outputs are never read
  dense, blockwise = _dense(q, k, v, mask), _blockwise(q, k, v, mask, block)
  np.testing.assert_allclose(jnp.where(real, blockwise, 0), jnp.where(real, dense, 0),
                             atol=1e-5, rtol=1e-5)

  def loss(fn):
    return lambda q, k, v: (jnp.where(real, fn(q, k, v), 0) ** 2).sum()
  grads_dense = _grads(loss(lambda *a: _dense(*a, mask)), q, k, v)
  grads_block = _grads(loss(lambda *a: attend_blockwise(*a, mask, block)), q, k, v)
  for got, want in zip(grads_block, grads_dense, strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t,s,block", [(7, 40, 8), (16, 64, 16), (5, 20, 64), (1, 33, 8)])
def test_cache_blockwise_attention_equals_dense(t, s, block):
  """T queries over S cache slots (keys [B, K, E, S], values [B, K, S, E]) in key blocks (a
  tail block when S is not a multiple; one partial block when S < block): the dense
  result, for a causal mask over left-padded rows, a random mask, and a row that sees no
  key (the dense path's uniform average)."""
  kq, kk, kv, km = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(kq, (4, t, 4, 8))
  k, v = jax.random.normal(kk, (4, 2, s, 8)), jax.random.normal(kv, (4, 2, s, 8))
  causal_TS = np.arange(s)[None, :] <= s - t + np.arange(t)[:, None]
  mask = np.broadcast_to(causal_TS, (4, t, s)).copy()
  mask[0, :, :9] = False                                        # left padding
  mask[1] &= np.asarray(jax.random.bernoulli(km, 0.7, (t, s)))  # any mask
  mask[2] = False                                               # no visible key
  mask = jnp.asarray(mask)
  np.testing.assert_allclose(_cache_blockwise(q, jnp.swapaxes(k, 2, 3), v, mask, block),
                             _kv_major(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_cache_blockwise_attention_reads_only_the_blocks_with_visible_keys():
  """Slots before every row's first key (a bucket's padding) and after the write index (free
  room) are never read: NaN there changes nothing, and the result is the dense one."""
  kq, kk, kv = jax.random.split(jax.random.key(2), 3)
  b, t, s, block = 3, 6, 96, 16
  q = jax.random.normal(kq, (b, t, 4, 8))
  k, v = jax.random.normal(kk, (b, 2, s, 8)), jax.random.normal(kv, (b, 2, s, 8))
  first = np.array([35, 40, 50])                       # each row's first real key
  index = 70                                           # the t new tokens end here
  slot, query = np.arange(s)[None, :], index - t + np.arange(t)[:, None]
  mask = (slot[None] >= first[:, None, None]) & (slot[None] <= query[None])
  unread = np.zeros(s, bool)
  unread[:32] = unread[80:] = True                     # outside blocks [32, 80)
  poison = lambda x: jnp.where(unread[None, None, :, None], jnp.nan, x)  # noqa: E731
  got = _cache_blockwise(q, jnp.swapaxes(poison(k), 2, 3), poison(v), jnp.asarray(mask), block)
  np.testing.assert_allclose(got, _kv_major(q, k, v, jnp.asarray(mask)),
                             atol=1e-5, rtol=1e-5)


def _right_padded(b, t):
  """Rows with 0, 7 and t - 5 padding tokens at the end, and one all-padding row."""
  lengths = np.array([t, t - 7, 5, 0])[:b]
  return jnp.asarray(np.arange(t)[None, :] < lengths[:, None])


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_fused_attention_equals_dense_on_right_padded_rows(dtype, tol):
  """`attend_fused` through XLA's implementation (cuDNN's needs a GPU: same API and
  arguments); the all-padding row stays finite."""
  kq, kk, kv = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(kq, (4, 37, 4, 8), dtype)
  k, v = (jax.random.normal(x, (4, 37, 2, 8), dtype) for x in (kk, kv))
  mask = _right_padded(4, 37)
  real = mask[:, :, None, None]
  fused = _fused(q, k, v, mask, "xla")
  assert jnp.isfinite(fused.astype(jnp.float32)).all()
  np.testing.assert_allclose(jnp.where(real, fused, 0).astype(jnp.float32),
                             jnp.where(real, _dense(q, k, v, mask), 0).astype(jnp.float32),
                             atol=tol, rtol=tol)

  def loss(fn):
    return lambda q, k, v: (jnp.where(real, fn(q, k, v), 0).astype(jnp.float32) ** 2).sum()
  grads_dense = _grads(loss(lambda *a: _dense(*a, mask)), q, k, v)
  grads_fused = _grads(loss(lambda *a: attend_fused(*a, mask, "xla")), q, k, v)
  for got, want in zip(grads_fused, grads_dense, strict=True):
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               atol=tol * 10, rtol=tol)


def test_chunked_token_stats_equal_the_whole_logits_ones():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  ids = jax.random.randint(jax.random.key(1), (3, 45), 0, CFG.vocab_size)
  hidden, _ = forward(model.model, ids, _masks(3, 45))
  logits = nnx.jit(lambda model, hidden: model.logits(hidden))(model, hidden)
  stats = nnx.jit(lambda model, hidden, chunk: token_stats(hidden, ids, model.logits, 0.7, chunk),
                  static_argnums=2)
  for chunk in (7, 45, 64):
    logp, entropy = stats(model, hidden, chunk)
    np.testing.assert_allclose(logp, token_logprobs(logits, ids, 0.7), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(entropy, token_entropy(logits, 0.7), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("first_token", [1, 2, 30, 44, 45, 60])
@pytest.mark.parametrize("chunk", [7, 64])
def test_token_stats_from_a_first_token(first_token, chunk):
  """Tokens from `first_token` on: the whole-logits values and the same gradient for a loss
  on them; zeros before (and everywhere when no position is left)."""
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  ids = jax.random.randint(jax.random.key(1), (3, 45), 0, CFG.vocab_size)
  hidden, _ = forward(model.model, ids, _masks(3, 45))
  logits = nnx.jit(lambda model, hidden: model.logits(hidden))(model, hidden)
  kept = jnp.arange(45) >= first_token

  def stats(hidden, first):
    return token_stats(hidden, ids, model.logits, 0.7, chunk, first)
  logp, entropy = jax.jit(stats, static_argnums=1)(hidden, first_token)
  np.testing.assert_allclose(logp, jnp.where(kept, token_logprobs(logits, ids, 0.7), 0),
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(entropy, jnp.where(kept, token_entropy(logits, 0.7), 0),
                             atol=1e-5, rtol=1e-5)
  loss = lambda first: lambda h: (jnp.where(kept, sum(stats(h, first)), 0) ** 2).sum()
  np.testing.assert_allclose(jax.jit(jax.grad(loss(first_token)))(hidden),
                             jax.jit(jax.grad(loss(1)))(hidden), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory", [MemoryOptions(attention="blockwise", logits_chunk=16),
                                    MemoryOptions("dots", "blockwise", 16),
                                    MemoryOptions("full", "dense", 1024),
                                    MemoryOptions("full", "fused", 16)])
def test_memory_options_change_nothing_but_memory(memory):
  """token_stats and the gradient of a masked log-likelihood, against the default model
  (right-padded rows for "fused", which reads keys by length)."""
  plain = CausalLM(CFG, rngs=nnx.Rngs(0))
  other = CausalLM(CFG, memory=memory, rngs=nnx.Rngs(0))
  ids = jax.random.randint(jax.random.key(2), (3, 40), 0, CFG.vocab_size)
  mask = _right_padded(3, 40) if memory.attention == "fused" else _masks(3, 40)

  def loss(model):
    logp, entropy = model.token_stats(ids, mask, 1.0)
    return (jnp.where(mask, logp - 0.1 * entropy, 0)).sum()
  value_and_grad = nnx.jit(nnx.value_and_grad(loss))
  (value_plain, grads_plain), (value_other, grads_other) = map(value_and_grad, (plain, other))
  np.testing.assert_allclose(value_other, value_plain, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads_other), jax.tree.leaves(grads_plain), strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def _temp_bytes(memory: MemoryOptions, t: int) -> int:
  """Temporary bytes of the compiled gradient of the token log-likelihood at length t."""
  cfg = DecoderConfig("qwen3", vocab_size=4096, hidden_size=64, intermediate_size=128,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: CausalLM(cfg, memory=memory,
                                                               rngs=nnx.Rngs(0))))

  def loss(params, ids):
    return nnx.merge(graphdef, params).token_stats(ids)[0].sum()
  ids = jax.ShapeDtypeStruct((1, t), jnp.int32)
  compiled = jax.jit(jax.grad(loss)).lower(params, ids).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_blockwise_step_memory_grows_linearly_and_dense_does_not():
  blockwise = MemoryOptions("full", "blockwise", 256)
  small, large = _temp_bytes(blockwise, 2048), _temp_bytes(blockwise, 4096)
  assert large <= 2.2 * small, (small, large)
  dense = MemoryOptions("full", "dense", 256)
  assert _temp_bytes(dense, 4096) > 3 * _temp_bytes(dense, 2048)     # [T, T] scores
