"""Ancestral sampling draws from the processed distribution: frequencies, kept sets, edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra.models.decoding import (Sampler, greedy_tokens, inverse_cdf_sample,
                                       processed_logprobs)

LOGITS_V = np.log(np.array([0.05, 0.4, 0.15, 0.3, 0.1], np.float32))


def _draw(sampler, n=20000):
  """n draws from one row of logits, each row with its own key (as decode steps have)."""
  keys_B = jax.vmap(jax.random.key)(jnp.arange(n, dtype=jnp.uint32))
  logits_BV = jnp.broadcast_to(jnp.asarray(LOGITS_V), (n, LOGITS_V.size))
  tokens_B, logp_B = jax.jit(sampler.__call__)(logits_BV, keys_B)
  return np.asarray(tokens_B), np.asarray(logp_B)


@pytest.mark.parametrize("sampler", [Sampler(1.0), Sampler(0.5), Sampler(1.0, top_k=3),
                                     Sampler(1.0, top_p=0.8)])
def test_token_frequencies_match_the_processed_distribution(sampler):
  """Chi-square of 20k draws against exp(processed_logprobs): p > 0.001 for a correct
  sampler (the statistic is ~ chi2 with k - 1 dof), and no draw outside the kept set."""
  tokens, logp = _draw(sampler)
  p = np.exp(np.asarray(processed_logprobs(jnp.asarray(LOGITS_V[None]), sampler.temperature,
                                           sampler.top_k, sampler.top_p))[0])
  kept = p > 0
  counts = np.bincount(tokens, minlength=p.size)
  assert counts[~kept].sum() == 0
  expected = p[kept] * tokens.size
  chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
  critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}[int(kept.sum()) - 1]   # chi2 quantile 0.999
  assert chi2 < critical, (counts, expected)
  np.testing.assert_allclose(logp, np.log(p[tokens]), rtol=1e-5)


def test_inverse_cdf_edges_never_pick_an_impossible_token():
  """u = 0 skips leading zero-probability tokens; u just below 1 (where u * total may round
  up to the total) takes the last possible token, not a masked one after it."""
  logp_BV = jnp.log(jnp.asarray([[0.0, 0.5, 0.5, 0.0], [0.0, 0.25, 0.75, 0.0]]))
  below_one = np.nextafter(np.float32(1), np.float32(0))
  assert inverse_cdf_sample(logp_BV, jnp.zeros(2)).tolist() == [1, 1]
  assert inverse_cdf_sample(logp_BV, jnp.full(2, below_one)).tolist() == [2, 2]
  assert inverse_cdf_sample(logp_BV, jnp.asarray([0.49, 0.26])).tolist() == [1, 2]


def _reference_inverse_cdf(logp_BV, u_B):
  """The docstring's formula in float64: min {v : p_v > 0 and cdf_v > u * cdf_V}."""
  p_BV = np.exp(np.asarray(logp_BV, np.float64))
  cdf_BV = np.cumsum(p_BV, axis=1)
  hit_BV = (p_BV > 0) & (cdf_BV > np.asarray(u_B, np.float64)[:, None] * cdf_BV[:, -1:])
  return hit_BV.argmax(axis=1)


def test_two_level_search_picks_the_float64_inverse_cdf_token():
  """V = 1000 is searched in 32 blocks of 32 (the last one padded); rows with a few kept
  tokens leave whole blocks empty. 8 rows x 64 uniforms each: the same token as the dense
  float64 inversion every time."""
  rng = np.random.RandomState(0)
  logits_BV = rng.randn(8, 1000).astype(np.float32) * 3
  logits_BV[4:, :] = -np.inf                          # rows 4-7: 5 tokens kept, far apart
  logits_BV[4:, [3, 40, 517, 998, 999]] = rng.randn(4, 5)
  logp_BV = processed_logprobs(jnp.asarray(logits_BV))
  sample = jax.jit(inverse_cdf_sample)
  for u_B in rng.uniform(size=(64, 8)).astype(np.float32):
    np.testing.assert_array_equal(sample(logp_BV, jnp.asarray(u_B)),
                                  _reference_inverse_cdf(logp_BV, u_B))


def test_multi_block_frequencies_match_the_processed_distribution():
  """The chi-square test above over a vocabulary of 1000 with top-k 4 (kept tokens in
  different blocks)."""
  logits_V = np.full(1000, -10.0, np.float32)
  logits_V[[5, 300, 301, 990]] = np.log([0.1, 0.2, 0.3, 0.4])
  n = 20000
  keys_B = jax.vmap(jax.random.key)(jnp.arange(n, dtype=jnp.uint32))
  sampler = Sampler(1.0, top_k=4)
  tokens, _ = jax.jit(sampler.__call__)(jnp.broadcast_to(jnp.asarray(logits_V), (n, 1000)), keys_B)
  counts = np.bincount(np.asarray(tokens), minlength=1000)
  assert counts.sum() == counts[[5, 300, 301, 990]].sum() == n
  expected = np.asarray([0.1, 0.2, 0.3, 0.4]) * n
  assert float(((counts[[5, 300, 301, 990]] - expected) ** 2 / expected).sum()) < 16.27


def test_greedy_tokens_are_argmax_with_the_first_tie():
  logits_BV = np.random.RandomState(1).randn(16, 300).astype(np.float32)
  logits_BV[3, [7, 200]] = 50.0                      # a tie: the first index wins, as argmax
  np.testing.assert_array_equal(greedy_tokens(jnp.asarray(logits_BV)), logits_BV.argmax(axis=1))
