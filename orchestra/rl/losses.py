"""Policy-gradient, KL, entropy and value losses as pure per-token functions.

Convention: arrays are [B, T] over the tokens of packed trajectories, and
`mask_BT` is 1 only on tokens the policy generated (prompts and tool
observations are 0). `token_logprobs` aligns log p(token_t | tokens_<t) with
token t, so the same mask applies to every per-token quantity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits_BTV, tokens_BT, temperature: float = 1.0, mask_BT=None):
  """logp_BT[:, t] = log softmax(logits[:, t-1] / temperature)[tokens[:, t]], 0 at t = 0.

  Logits at position t-1 predict token t; `temperature` must equal the
  sampler's so that learner and behaviour log-probs are comparable. With
  `mask_BT`, positions where the mask is 0 are set to 0.
  """
  logp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32) / temperature, axis=-1)
  picked = jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], axis=-1)[..., 0]
  logp_BT = jnp.pad(picked, ((0, 0), (1, 0)))
  return logp_BT if mask_BT is None else jnp.where(mask_BT, logp_BT, 0.0)


def token_entropy(logits_BTV, temperature: float = 1.0):
  """H_BT[:, t] = -sum_v p log p of the distribution that produced token t (0 at t = 0)."""
  logp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32) / temperature, axis=-1)
  entropy = -(jnp.exp(logp_BTV) * logp_BTV).sum(-1)
  return jnp.pad(entropy, ((0, 0), (1, 0)))


def clipped_policy_loss(logp_BT, old_logp_BT, advantages_BT, *, clip_low: float = 0.2,
                        clip_high: float = 0.28, dual_clip: float | None = None,
                        behaviour_logp_BT=None, tis_cap: float | None = None):
  """PPO-clip surrogate with clip-higher, optional dual clip and truncated IS.

      r_t     = exp(logp_t - old_logp_t)
      L_t     = max(-A_t r_t, -A_t clip(r_t, 1 - clip_low, 1 + clip_high))     (Schulman 2017;
                                                                                 DAPO clip-higher)
      L_t     = min(L_t, -A_t * dual_clip)      where A_t < 0                   (dual clip, Ye 2020)
      L_t    *= min(exp(old_logp_t - behaviour_logp_t), tis_cap)                (truncated IS, Yao 2025)

  `old_logp` is the learner's log-prob before the update; `behaviour_logp`
  the sampler's (e.g. vLLM's), which can differ numerically from the learner.

  Returns (loss_BT, clipped_BT): the per-token loss and where the clip is active
  (the gradient through r is zero there).
  """
  ratio = jnp.exp(logp_BT - old_logp_BT)
  unclipped = -advantages_BT * ratio
  clipped = -advantages_BT * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  loss = jnp.maximum(unclipped, clipped)
  is_clipped = clipped > unclipped
  if dual_clip is not None:
    lower_bound = -advantages_BT * dual_clip
    dual = (advantages_BT < 0) & (loss > lower_bound)
    loss = jnp.where(dual, lower_bound, loss)
    is_clipped = is_clipped | dual
  if behaviour_logp_BT is not None:
    weight = jnp.exp(old_logp_BT - behaviour_logp_BT)
    if tis_cap is not None:
      weight = jnp.minimum(weight, tis_cap)
    loss = loss * jax.lax.stop_gradient(weight)
  return loss, is_clipped


KL_ESTIMATORS = ("k1", "k3", "low_var_kl", "mse", "k2")


def kl_penalty(logp_BT, ref_logp_BT, estimator: str = "mse", mask_BT=None):
  """Per-token KL(pi || pi_ref) estimates from tokens sampled from pi (Schulman 2020),
  d = logp - ref_logp:

      k1  = d
      k3  = exp(-d) + d - 1         ("low_var_kl": unbiased, >= 0)
      mse = d^2 / 2                 (k2)

  k3 is computed as verl's low_var_kl: d clamped to [-20, 20] before the exponent and
  the estimate to at most 10, so one outlier token cannot blow up the loss. With
  `mask_BT`, d is set to 0 off the mask *before* any exponent: a prompt or observation
  token with |d| > 88 would otherwise give exp(d) = inf, and inf * 0 = nan in the loss.
  """
  d = logp_BT - ref_logp_BT
  if mask_BT is not None:
    d = jnp.where(mask_BT, d, 0.0)
  if estimator == "k1":
    return d
  if estimator in ("k3", "low_var_kl"):
    d = jnp.clip(d, -20.0, 20.0)
    return jnp.minimum(jnp.exp(-d) + d - 1.0, 10.0)
  if estimator in ("mse", "k2"):
    return 0.5 * d * d
  raise ValueError(f"kl estimator {estimator!r}: expected one of {KL_ESTIMATORS}")


def clipped_value_loss(values_BT, old_values_BT, returns_BT, clip: float = 0.2):
  """PPO value loss: 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)."""
  clipped = old_values_BT + jnp.clip(values_BT - old_values_BT, -clip, clip)
  return 0.5 * jnp.maximum((values_BT - returns_BT) ** 2, (clipped - returns_BT) ** 2)


def aggregation_weights(mask_BT, mode: str = "token_mean", norm_constant: float | None = None,
                        totals=None):
  """Per-token weights w with  aggregate(L) = sum(L * w)  over policy tokens:

      token_mean            w = m / N                                       (DAPO)
      seq_mean_token_mean   w = m / (sum_t m_b * R)                         (GRPO)
      seq_sum_norm          w = m / (R * norm_constant)                     (Dr.GRPO; constant =
                                                                             max response tokens)

  N = policy tokens, R = rows with any (padding rows of all zeros do not count).
  Computing w once for the whole batch makes gradient accumulation exact: the sum of
  micro-batch gradients of sum(L * w) equals the full-batch gradient. `totals` = (N, R)
  of a batch that spans several arrays (see `batch_totals`), else this array's own.
  """
  mask = jnp.asarray(mask_BT).astype(jnp.float32)
  per_row = mask.sum(axis=1, keepdims=True)
  tokens, rows = totals if totals is not None else batch_totals([mask])
  if mode == "token_mean":
    return mask / jnp.maximum(tokens, 1.0)
  if mode == "seq_mean_token_mean":
    return mask / jnp.maximum(per_row, 1.0) / jnp.maximum(rows, 1.0)
  if mode == "seq_sum_norm":
    if not norm_constant:
      raise ValueError("seq_sum_norm needs norm_constant (e.g. the maximum response length)")
    return mask / (jnp.maximum(rows, 1.0) * norm_constant)
  raise ValueError(f"aggregation {mode!r}: expected 'token_mean', 'seq_mean_token_mean' "
                   "or 'seq_sum_norm'")


def batch_totals(masks_BT) -> tuple[jax.Array, jax.Array]:
  """(N, R) of `aggregation_weights` over several loss masks that form one batch."""
  masks = [jnp.asarray(m).astype(jnp.float32) for m in masks_BT]
  tokens = sum(m.sum() for m in masks)
  rows = sum((m.sum(axis=1) > 0).sum().astype(jnp.float32) for m in masks)
  return tokens, rows


def aggregate(loss_BT, mask_BT, mode: str = "token_mean", norm_constant: float | None = None):
  """Reduces a per-token loss to a scalar over policy tokens (see `aggregation_weights`)."""
  return (loss_BT * aggregation_weights(mask_BT, mode, norm_constant)).sum()
