"""Advantage estimators: GRPO group z-score, RLOO, and GAE for PPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def group_advantages(rewards, eps: float = 1e-6, clip: float | None = 3.0,
                     scale_by_std: bool = True) -> jax.Array:
  """GRPO advantages for one group (Shao et al. 2024, DeepSeekMath):

      A_i = clip((R_i - mean(R)) / (std(R) + eps), -clip, clip)

  with the sample standard deviation (ddof=1). `scale_by_std=False` gives
  A_i = R_i - mean(R) (Dr.GRPO, Liu et al. 2025). A group of one has A = 0.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  n = rewards.shape[0]
  centred = rewards - rewards.mean()
  if scale_by_std:
    std = jnp.sqrt((centred ** 2).sum() / max(n - 1, 1))
    centred = centred / (std + eps)
  return centred if clip is None else jnp.clip(centred, -clip, clip)


def rloo_advantages(rewards) -> jax.Array:
  """REINFORCE leave-one-out (Ahmadian et al. 2024) for one group:

      A_i = R_i - mean_{j != i} R_j = n / (n - 1) * (R_i - mean(R)),

  and 0 for a group of one.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  n = rewards.shape[0]
  if n < 2:
    return jnp.zeros_like(rewards)
  return n / (n - 1) * (rewards - rewards.mean())


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
