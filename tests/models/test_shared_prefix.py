"""Rows sharing their first tokens run them once and get the plain forward's log-probs and
gradients (`orchestra.models.shared_prefix`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra.models import CausalLM, DecoderConfig, MemoryOptions, decoder
from orchestra.models.decoding import distinct_rows

S, T = 16, 28          # shared length (the update's first loss token), row length


def grouped_batch(vocab: int, seed: int = 0):
  """8 rows: prompts A (rows 0-2), B (3-5, left-padded by 4), C (6) and D (7); each row's
  own completion after token S, the last rows right-padded."""
  rng = np.random.RandomState(seed)
  prompts = rng.randint(1, vocab, (4, S))
  rows = [0, 0, 0, 1, 1, 1, 2, 3]
  ids = np.concatenate([prompts[rows], rng.randint(1, vocab, (8, T - S))], 1).astype(np.int32)
  mask = np.ones((8, T), bool)
  mask[3:6, :4] = False                   # prompt B left-padded (the same in its rows)
  ids[3:6, :4] = 0
  mask[5:, T - 5:] = False                # short completions, right-padded
  return jnp.asarray(ids), jnp.asarray(mask)


def plan(ids, mask):
  keys = [np.asarray(ids[b, :S]).tobytes() + np.asarray(mask[b, :S]).tobytes()
          for b in range(len(ids))]
  first_U, source_B = distinct_rows(keys)
  return jnp.asarray(first_U), jnp.asarray(source_B)


@pytest.mark.parametrize("family, qk_norm, tied", [("qwen3", True, False), ("llama", False, True)])
def test_a_shared_prefix_gives_the_plain_log_probs_entropies_and_gradients(family, qk_norm, tied,
                                                                          monkeypatch):
  # Scores of any size would take the cache's blockwise path, which is forward only.
  monkeypatch.setattr(decoder, "DENSE_SCORES_MAX_BYTES", 0)
  cfg = DecoderConfig(family, vocab_size=96, hidden_size=32, intermediate_size=48,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=qk_norm,
                      tie_word_embeddings=tied)
  model = CausalLM(cfg, rngs=nnx.Rngs(3))
  ids, mask = grouped_batch(cfg.vocab_size)
  shared = plan(ids, mask)
  assert shared[0].shape[0] == 4                       # 4 distinct prompts for 8 rows
  graphdef, params = nnx.split(model)
  weights_BT = jnp.asarray(np.random.RandomState(1).randn(8, T), jnp.float32) * mask

  @jax.jit
  def stats(p, ids, mask, rows):                     # traced masks, as in the update
    return nnx.merge(graphdef, p).token_stats(ids, mask, 0.8, S, rows)

  @jax.jit
  @jax.grad
  def gradient(p, ids, mask, rows):
    logp, entropy = stats(p, ids, mask, rows)
    return (logp * weights_BT).sum() + 0.1 * (entropy * weights_BT).sum()

  plain_logp, plain_entropy = stats(params, ids, mask, None)
  logp, entropy = stats(params, ids, mask, shared)
  np.testing.assert_allclose(logp[:, S:], plain_logp[:, S:], atol=2e-5, rtol=0)
  np.testing.assert_allclose(entropy[:, S:], plain_entropy[:, S:], atol=2e-5, rtol=0)
  assert (np.asarray(logp[:, :S]) == 0).all()          # no loss reads them
  want = gradient(params, ids, mask, None)
  got = gradient(params, ids, mask, shared)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, atol=1e-5 * float(np.abs(w).max()) + 1e-7, rtol=1e-4)


def test_a_model_with_remat_refuses_shared_rows_naming_its_options():
  cfg = DecoderConfig("qwen3", vocab_size=96, hidden_size=32, intermediate_size=48,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
  model = CausalLM(cfg, memory=MemoryOptions(remat="full"), rngs=nnx.Rngs(0))
  assert not model.shares_prefixes
  ids, mask = grouped_batch(cfg.vocab_size)
  with pytest.raises(ValueError, match="remat 'none'.*'full'"):
    model.token_stats(ids, mask, 1.0, S, plan(ids, mask))
