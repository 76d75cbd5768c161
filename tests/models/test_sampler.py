"""Ancestral sampling draws from the processed distribution: frequencies, kept sets, edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra.models.decoding import Sampler, inverse_cdf_sample, processed_logprobs

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
