"""Hand-computed cases for advantages and losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra.rl import (aggregate, aggregation_weights, batch_totals, clipped_policy_loss,
                          clipped_value_loss, gae, group_advantages, group_estimates, kl_penalty,
                          rloo_advantages, terminal_rewards, token_entropy, token_logprobs,
                          whiten)


def test_group_advantages_zscore_with_sample_std():
  # R = [2, 1, 0]: mean 1, sample std 1 -> [1, 0, -1] / (1 + 1e-6).
  np.testing.assert_allclose(group_advantages([2.0, 1.0, 0.0]), [1 / (1 + 1e-6), 0, -1 / (1 + 1e-6)],
                             rtol=1e-6)
  np.testing.assert_allclose(group_advantages([2.0, 1.0, 0.0], scale_by_std=False), [1, 0, -1])


def test_group_advantages_clip_at_three():
  # One success in 20: mean .05, sample std sqrt(.95/19) = .2236 -> 4.249 clipped to 3, others -.2236.
  r = np.zeros(20)
  r[0] = 1.0
  a = np.asarray(group_advantages(r))
  assert a[0] == pytest.approx(3.0)
  np.testing.assert_allclose(a[1:], -0.05 / np.sqrt(0.05), rtol=1e-5)


def test_group_advantages_degenerate_groups():
  np.testing.assert_array_equal(group_advantages([0.7]), [0.0])
  np.testing.assert_array_equal(group_advantages([0.5, 0.5, 0.5]), [0.0, 0.0, 0.0])
  for reward in (0.2, 0.7, 1.7125):       # float32 means of these are not exact
    np.testing.assert_array_equal(group_advantages(np.full(8, reward)), np.zeros(8))
    np.testing.assert_array_equal(rloo_advantages(np.full(8, reward)), np.zeros(8))


def test_rloo():
  # A_i = R_i - mean of the others: 2 - .5, 1 - 1, 0 - 1.5.
  np.testing.assert_allclose(rloo_advantages([2.0, 1.0, 0.0]), [1.5, 0.0, -1.5])
  np.testing.assert_array_equal(rloo_advantages([3.0]), [0.0])


def test_gae_skips_masked_tokens():
  # Tokens: prompt(0) policy(1) observation(2) policy(3); reward 1 at the end.
  rewards, values, mask = [[0, 0, 0, 1.0]], [[9, 0.5, 9, 0.8]], [[0, 1, 0, 1]]
  adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
  # t3: delta = 1 - .8 = .2; t1: delta = 0 + .8 - .5 = .3, A = .3 + .2 = .5.
  np.testing.assert_allclose(adv, [[0, 0.5, 0, 0.2]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 1.0, 0, 1.0]], atol=1e-6)
  adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
  # t1: delta = .9 * .8 - .5 = .22, A = .22 + .45 * .2 = .31.
  np.testing.assert_allclose(adv, [[0, 0.31, 0, 0.2]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 0.81, 0, 1.0]], atol=1e-6)


RATIOS = np.array([[0.5, 1.0, 1.5, 1.5, 0.5, 0.7]])
ADV = np.array([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])


def test_clip_higher_engages_only_for_positive_advantages():
  logp = jnp.log(jnp.asarray(RATIOS))
  loss, clipped = clipped_policy_loss(logp, jnp.zeros_like(logp), ADV, clip_low=0.2, clip_high=0.28)
  # r=.5,A=1 -> -.5 | r=1 -> -1 | r=1.5,A=1 -> -1.28 (clip high) | r=1.5,A=-1 -> 1.5 (no clip)
  # r=.5,A=-1 -> .8 (clip low) | r=.7,A=-1 -> .8 (clip low)
  np.testing.assert_allclose(loss, [[-0.5, -1.0, -1.28, 1.5, 0.8, 0.8]], rtol=1e-6)
  assert clipped.tolist() == [[False, False, True, False, True, True]]


def test_dual_clip_bounds_negative_advantage_loss():
  logp = jnp.log(jnp.asarray(RATIOS))
  loss, clipped = clipped_policy_loss(logp, jnp.zeros_like(logp), ADV, dual_clip=1.4)
  assert float(loss[0, 3]) == pytest.approx(1.4) and bool(clipped[0, 3])


def test_gradient_is_zero_exactly_where_clipped():
  logp = jnp.log(jnp.asarray(RATIOS))
  old = jnp.zeros_like(logp)

  def total(lp):
    return clipped_policy_loss(lp, old, ADV, dual_clip=1.4)[0].sum()

  grad = np.asarray(jax.grad(total)(logp))
  _, clipped = clipped_policy_loss(logp, old, ADV, dual_clip=1.4)
  # d(-A r)/dlogp = -A r where unclipped: tok0 -.5, tok1 -1; tok3 is dual-clipped now.
  np.testing.assert_allclose(grad, [[-0.5, -1.0, 0.0, 0.0, 0.0, 0.0]], rtol=1e-6)
  assert (grad[np.asarray(clipped)] == 0).all()


def test_truncated_importance_weight():
  # old - behaviour = log 3 -> weight 3, capped at 2; loss -A r = -1 * 1 -> -2.
  loss, _ = clipped_policy_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.ones((1, 1)),
                                behaviour_logp_BT=-jnp.log(3.0) * jnp.ones((1, 1)), tis_cap=2.0)
  assert float(loss[0, 0]) == pytest.approx(-2.0)


def test_kl_estimators():
  logp, ref = jnp.array([[-1.0]]), jnp.array([[-2.0]])     # d = 1
  assert float(kl_penalty(logp, ref, "k1")[0, 0]) == pytest.approx(1.0)
  assert float(kl_penalty(logp, ref, "k3")[0, 0]) == pytest.approx(np.exp(-1.0))
  assert float(kl_penalty(logp, ref, "mse")[0, 0]) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="kl estimator"):
    kl_penalty(logp, ref, "k4")


def test_token_logprobs_and_entropy():
  # Position 0 predicts token 1 with p = [.25, .75].
  logits = jnp.array([[[0.0, np.log(3.0)], [5.0, 5.0]]])
  tokens = jnp.array([[0, 1]])
  np.testing.assert_allclose(token_logprobs(logits, tokens), [[0.0, np.log(0.75)]], rtol=1e-6)
  np.testing.assert_allclose(token_entropy(logits),
                             [[0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]], rtol=1e-6)
  np.testing.assert_array_equal(token_logprobs(logits, tokens, mask_BT=jnp.array([[1, 0]])),
                                [[0.0, 0.0]])
  # Temperature 2 halves the logits: p = softmax([0, log(3)/2]) = [1/(1+sqrt3), sqrt3/(1+sqrt3)].
  np.testing.assert_allclose(token_logprobs(logits, tokens, temperature=2.0)[0, 1],
                             np.log(np.sqrt(3) / (1 + np.sqrt(3))), rtol=1e-6)


def test_aggregation_modes():
  loss = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
  assert float(aggregate(loss, mask, "token_mean")) == pytest.approx(7 / 3)
  assert float(aggregate(loss, mask, "seq_mean_token_mean")) == pytest.approx((1.5 + 4) / 2)
  # Row 3 has no policy token (a padding row): Dr.GRPO divides by the 2 real rows.
  assert float(aggregate(loss, mask, "seq_sum_norm", norm_constant=4)) == pytest.approx(7 / 8)
  with pytest.raises(ValueError, match="norm_constant"):
    aggregate(loss, mask, "seq_sum_norm")


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_sum_norm"])
def test_padding_rows_and_splitting_a_batch_leave_the_weights_unchanged(mode):
  """Rows of zeros (shape padding) change no weight; nor does splitting the rows into
  arrays of different lengths when `batch_totals` of all of them is used."""
  mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
  whole = aggregation_weights(mask, mode, norm_constant=4)
  padded = aggregation_weights(jnp.concatenate([mask, jnp.zeros((5, 4), int)]), mode,
                               norm_constant=4)
  np.testing.assert_allclose(padded[:3], whole)
  short, long = mask[:2, :2], mask[2:]                    # bucketed: lengths 2 and 4
  totals = batch_totals([short, long])
  np.testing.assert_allclose(aggregation_weights(short, mode, 4, totals), whole[:2, :2])
  np.testing.assert_allclose(aggregation_weights(long, mode, 4, totals), whole[2:])


def test_clipped_value_loss():
  # V=1, V_old=.5, R=2: clipped V = .7 -> .5 * max(1, 1.69) = .845.
  # V=2.5, V_old=2, R=2.6: clipped V = 2.2 -> .5 * max(.01, .16) = .08.
  out = clipped_value_loss(jnp.array([1.0, 2.5]), jnp.array([0.5, 2.0]), jnp.array([2.0, 2.6]))
  np.testing.assert_allclose(out, [0.845, 0.08], rtol=1e-5)


def test_k3_is_finite_off_the_mask_and_clamped():
  # A prompt token the learner finds very unlikely: d = logp - ref = -200, exp(-d) overflows.
  logp, ref = jnp.array([[-201.0, -1.0]]), jnp.array([[-1.0, -2.0]])
  mask = jnp.array([[False, True]])

  def total(lp):
    return (kl_penalty(lp, ref, "k3", mask) * mask).sum()

  value, grad = jax.value_and_grad(total)(logp)
  assert float(value) == pytest.approx(np.exp(-1.0) + 1.0 - 1.0)       # only t = 1 counts
  assert np.isfinite(np.asarray(grad)).all() and float(grad[0, 0]) == 0.0
  # On the mask, an outlier is clamped (verl's low_var_kl): d in [-20, 20], k3 <= 10.
  assert float(kl_penalty(jnp.array([[-300.0]]), jnp.array([[-1.0]]), "k3")[0, 0]) == 10.0


def test_terminal_rewards_sit_on_each_episodes_last_policy_token():
  mask = np.array([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
  r = np.asarray(terminal_rewards(mask, [2.0, -1.0]))        # row 2 is padding
  expected = np.zeros((3, 6))
  expected[0, 4], expected[1, 3] = 2.0, -1.0
  np.testing.assert_array_equal(r, expected)


def test_whiten_uses_masked_tokens_only():
  adv = np.array([[1.0, 2.0, 100.0], [3.0, 100.0, 4.0]])
  mask = np.array([[1, 1, 0], [1, 0, 1]], bool)
  # masked values 1, 2, 3, 4: mean 2.5, population std sqrt(1.25)
  out = np.asarray(whiten(adv, mask))
  s = np.sqrt(1.25) + 1e-6
  np.testing.assert_allclose(out, [[-1.5 / s, -0.5 / s, 0.0], [0.5 / s, 0.0, 1.5 / s]], rtol=1e-6)


def test_group_estimates_drop_homogeneous_groups_and_skip_dropped_episodes():
  adv, keep = group_estimates([1.0, 0.0, 5.0, 0.0], [True, True, False, True], "rloo", 0.1)
  assert keep.tolist() == [True, True, False, True]
  # RLOO over the kept [1, 0, 0]: n/(n-1) (R - mean) = 1.5 * ([1, 0, 0] - 1/3)
  np.testing.assert_allclose(adv, [1.0, -0.5, 0.0, -0.5], rtol=1e-6)
  adv, keep = group_estimates([0.5, 0.5, 0.52], [True, True, True], "grpo", 0.1)
  assert not keep.any() and not adv.any()                     # std 0.0115 < 0.1: dropped
  with pytest.raises(ValueError, match="estimator 'ppo'"):
    group_estimates([1.0, 0.0], [True, True], "ppo")
