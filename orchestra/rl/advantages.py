"""Advantage estimators: GRPO group z-score, RLOO, and GAE for PPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from orchestra.rewards.filters import keep_group


def group_advantages(rewards, eps: float = 1e-6, clip: float | None = 3.0,
                     scale_by_std: bool = True) -> jax.Array:
  """GRPO advantages for one group (Shao et al. 2024, DeepSeekMath):

      A_i = clip((R_i - mean(R)) / (std(R) + eps), -clip, clip)

  with the sample standard deviation (ddof=1). `scale_by_std=False` gives
  A_i = R_i - mean(R) (Dr.GRPO, Liu et al. 2025). A group of one, or of equal rewards,
  has A = 0 exactly.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  n = rewards.shape[0]
  centred = _centred(rewards)
  if scale_by_std:
    std = jnp.sqrt((centred ** 2).sum() / max(n - 1, 1))
    centred = centred / (std + eps)
  return centred if clip is None else jnp.clip(centred, -clip, clip)


def rloo_advantages(rewards) -> jax.Array:
  """REINFORCE leave-one-out (Ahmadian et al. 2024) for one group:

      A_i = R_i - mean_{j != i} R_j = n / (n - 1) * (R_i - mean(R)),

  and 0 for a group of one or of equal rewards.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  n = rewards.shape[0]
  if n < 2:
    return jnp.zeros_like(rewards)
  return n / (n - 1) * _centred(rewards)


def _centred(rewards):
  """R - mean(R), exactly 0 for equal rewards (a float32 mean of eight 0.2s is not 0.2, and
  the z-score would divide that rounding by ~eps)."""
  return jnp.where(rewards.max() > rewards.min(), rewards - rewards.mean(), 0.0)


def gae(rewards_BT, values_BT, mask_BT, gamma: float = 1.0, lam: float = 1.0):
  """Generalised advantage estimation (Schulman et al. 2016) over policy tokens.

  Only tokens with mask 1 are steps of the MDP; tool observations and prompt
  tokens between them are skipped (they neither add reward nor break the chain):

      delta_t = r_t + gamma * V_{next(t)} - V_t
      A_t     = delta_t + gamma * lam * A_{next(t)}

  where next(t) is the next policy token after t (none at the end: V = A = 0).
  Returns (advantages_BT, returns_BT = A + V), both zero on masked tokens.
  """
  rewards_TB = jnp.asarray(rewards_BT, jnp.float32).T
  values_TB = jnp.asarray(values_BT, jnp.float32).T
  mask_TB = jnp.asarray(mask_BT, jnp.bool_).T

  def step(carry, xs):
    next_value, next_adv = carry
    r, v, m = xs
    delta = r + gamma * next_value - v
    adv = delta + gamma * lam * next_adv
    carry = (jnp.where(m, v, next_value), jnp.where(m, adv, next_adv))
    return carry, jnp.where(m, adv, 0.0)

  zeros = jnp.zeros(rewards_TB.shape[1], jnp.float32)
  _, adv_TB = jax.lax.scan(step, (zeros, zeros), (rewards_TB, values_TB, mask_TB), reverse=True)
  advantages_BT = adv_TB.T
  returns_BT = jnp.where(mask_TB.T, advantages_BT + values_TB.T, 0.0)
  return advantages_BT, returns_BT


def terminal_rewards(mask_BT, episode_rewards_B) -> jax.Array:
  """r_BT: each episode's reward R_b on its last policy token, 0 elsewhere (and 0 for rows
  without policy tokens, e.g. padding)."""
  mask = jnp.asarray(mask_BT, jnp.bool_)
  t = mask.shape[1]
  last_B = t - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  at_last_BT = (jnp.arange(t)[None, :] == last_B[:, None]) & mask.any(axis=1, keepdims=True)
  rewards_B = jnp.zeros(mask.shape[0], jnp.float32).at[:len(episode_rewards_B)].set(
      jnp.asarray(episode_rewards_B, jnp.float32))
  return jnp.where(at_last_BT, rewards_B[:, None], 0.0)


def whiten(advantages_BT, mask_BT, eps: float = 1e-6) -> jax.Array:
  """Batch whitening over policy tokens (PPO):  A <- (A - mean_m A) / (std_m A + eps) on the
  mask, 0 off it, where mean_m and std_m (population) run over masked tokens only."""
  mask = jnp.asarray(mask_BT, jnp.bool_)
  adv = jnp.asarray(advantages_BT, jnp.float32)
  n = jnp.maximum(mask.sum(), 1)
  mean = jnp.where(mask, adv, 0.0).sum() / n
  std = jnp.sqrt(jnp.where(mask, (adv - mean) ** 2, 0.0).sum() / n)
  return jnp.where(mask, (adv - mean) / (std + eps), 0.0)


ESTIMATORS = ("grpo", "rloo")


def group_estimates(rewards_G, keep_G, estimator: str = "grpo", std_threshold: float = 0.1):
  """(advantages [G], keep [G]) of one group for GRPO or RLOO.

  The estimator runs over the kept episodes only (`group_advantages` or
  `rloo_advantages`); the others get A = 0. A homogeneous group (sample std of the kept
  rewards < `std_threshold`) teaches nothing and is dropped whole: keep becomes all False.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator {estimator!r}: expected one of {ESTIMATORS}")
  rewards, keep = np.asarray(rewards_G, np.float64), np.asarray(keep_G, bool)
  advantages = np.zeros(len(rewards))
  if not keep.any() or not keep_group(rewards[keep], std_threshold):
    return advantages, np.zeros(len(rewards), bool)
  fn = group_advantages if estimator == "grpo" else rloo_advantages
  advantages[keep] = np.asarray(fn(rewards[keep]))
  return advantages, keep
