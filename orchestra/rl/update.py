"""The jitted, sharded update step for the policy (GRPO/PPO) and the value model.

A packed batch is a dict of [B, T] arrays:

  tokens          int32   prompt + generated + tool-observation tokens
  attention_mask  bool    real tokens (padding is 0)
  loss_mask       bool    tokens the policy generated (the only ones in the loss)
  advantages      float   per token (GRPO: the episode's advantage on each of its tokens)
  behaviour_logp  float   the sampler's log-probs of the tokens
  old_logp        float   optional: learner log-probs before this round of updates
                          (default: the current ones, i.e. ratio 1 -- one on-policy step)
  ref_logp        float   reference-policy log-probs, needed only when kl_coef > 0
  returns, old_values     value-model batches (PPO)

and, inside the compiled step of a loss marked `reads_first_token` (the policy and SFT
losses), `first_token`: a Python int (`first_loss_token`, set by `Learner.update`) before
which no row has a loss token; those losses take no logits there (`CausalLM.token_stats`),
and `prefix_rows` U with the arrays `prefix_first` and `prefix_source` (from
`shared_prefix_rows`): rows (a GRPO group) that begin with the same `first_token` tokens,
which the model then runs once for each of the U distinct ones.

One `Learner.update` call applies one optimizer step: the batch (one array batch, or
several of different lengths, e.g. rows bucketed by length) is split into
`num_micro_batches` whose gradients are summed in a `lax.scan`. Token weights for the
loss are computed on the whole batch first, so the result equals the full-batch
gradient exactly, whatever the aggregation mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orchestra.models.decoding import distinct_rows
from orchestra.rl.losses import (KL_ESTIMATORS, aggregation_weights, batch_totals,
                                 clipped_policy_loss, clipped_value_loss, kl_penalty)
from orchestra.sharding.rules import BATCH_AXES, Rules, batch_sharding, state_shardings

Batch = dict[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch], tuple[jax.Array, dict[str, jax.Array]]]

FIRST_TOKEN_MULTIPLE = 64     # `first_loss_token` rounds down to this: fewer compiled variants
MIN_SHARED_SAVING = 0.25      # `shared_prefix_rows`: the least share of a batch's tokens saved


def first_loss_token(loss_mask_BT) -> int:
  """The first token index any row trains on, rounded down to a multiple of
  `FIRST_TOKEN_MULTIPLE` (at least 1). It is a static of the compiled update, hence the
  rounding; 1 (every position) when the mask is empty or not all on this host."""
  if isinstance(loss_mask_BT, jax.Array) and not loss_mask_BT.is_fully_addressable:
    return 1
  columns = np.flatnonzero(np.asarray(loss_mask_BT).astype(bool).any(axis=0))
  if columns.size == 0:
    return 1
  return max(1, int(columns[0]) // FIRST_TOKEN_MULTIPLE * FIRST_TOKEN_MULTIPLE)


def shared_prefix_rows(tokens_BT, attention_mask_BT, length: int, num_micro_batches: int = 1,
                       min_saving: float = MIN_SHARED_SAVING
                       ) -> tuple[int, np.ndarray, np.ndarray] | None:
  """Rows whose first `length` tokens (and padding) are equal, per micro-batch (rows i,
  i + M, i + 2M, ...: `micro_batch_grads_fn`'s split): (U, first_B, source_B), the batch's
  `prefix_rows`, `prefix_first` and `prefix_source`. Micro-batch i's slice of first_B
  begins with its distinct rows (`decoding.distinct_rows`, padded to the largest count U),
  and its slice of source_B gives each of its rows' prefix among them, both as indices
  into the micro-batch. None when some micro-batch would not shrink, or when the tokens
  saved, (B - U) x `length` of B x T per micro-batch, are under `min_saving` of them: the
  shared pass is another compiled program, worth it for a large saving only (a GRPO
  group's long prompt, not 64 tokens of a long multi-turn episode)."""
  b, m = len(tokens_BT), num_micro_batches
  if length < 2:
    return None
  tokens = np.asarray(tokens_BT)[:, :length]
  mask = np.asarray(attention_mask_BT, bool)[:, :length]
  plans = [distinct_rows([tokens[r].tobytes() + mask[r].tobytes() for r in range(i, b, m)])
           for i in range(m)]
  if any(source is None for _, source in plans):
    return None
  u = max(len(first) for first, _ in plans)
  rows = b // m
  if (rows - u) * length < min_saving * rows * np.shape(tokens_BT)[1]:
    return None
  first_B, source_B = np.zeros(b, np.int32), np.zeros(b, np.int32)
  for i, (first, source) in enumerate(plans):
    first_B[i::m][:len(first)] = first
    source_B[i::m] = source
  return u, first_B, source_B


def model_token_stats(model, batch: Batch, temperature: float):
  """`model.token_stats` of the batch's tokens from its `first_token` on, running shared
  prefixes once when the batch has `prefix_rows` (`shared_prefix_rows`)."""
  u = batch.get("prefix_rows", 0)
  shared = {"shared_rows": (batch["prefix_first"][:u], batch["prefix_source"])} if u else {}
  return model.token_stats(batch["tokens"], batch["attention_mask"], temperature,
                           batch.get("first_token", 1), **shared)


def reads_first_token(loss_fn: LossFn) -> LossFn:
  """Marks a loss that reads `batch["first_token"]`. Only such losses get it: it is a
  static of the compiled step, so a loss that ignores it (the value loss) would compile
  once per first token for nothing."""
  loss_fn.reads_first_token = True
  return loss_fn


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 1e-6
  schedule: str = "constant"      # "constant" or "cosine" (both after linear warmup)
  warmup_steps: int = 0
  total_steps: int = 1000         # cosine decay length, warmup included
  end_lr_ratio: float = 0.0       # cosine floor as a fraction of learning_rate
  weight_decay: float = 0.0       # decoupled (AdamW), matrices only
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: float | None = 1.0

  def __post_init__(self):
    problems = []
    if not self.learning_rate > 0:
      problems.append(f"learning_rate={self.learning_rate} must be > 0")
    if self.schedule not in ("constant", "cosine"):
      problems.append(f"schedule={self.schedule!r}: expected 'constant' or 'cosine'")
    if self.warmup_steps < 0 or self.total_steps < 0:
      problems.append(f"warmup_steps={self.warmup_steps} and total_steps={self.total_steps} "
                      "must be >= 0")
    if not 0 <= self.end_lr_ratio <= 1 or self.weight_decay < 0:
      problems.append(f"end_lr_ratio={self.end_lr_ratio} must be in [0, 1] and "
                      f"weight_decay={self.weight_decay} >= 0")
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      problems.append(f"max_grad_norm={self.max_grad_norm} must be > 0 (or None: off)")
    if problems:
      raise ValueError("; ".join(problems))


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  if cfg.schedule == "constant":
    if cfg.warmup_steps == 0:
      return optax.constant_schedule(cfg.learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
         optax.constant_schedule(cfg.learning_rate)], [cfg.warmup_steps])
  return optax.warmup_cosine_decay_schedule(       # "cosine" (validated by OptimizerConfig)
      0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.total_steps, cfg.warmup_steps + 1),
      cfg.learning_rate * cfg.end_lr_ratio)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with the configured schedule."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  adamw = optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=decay_mask)
  if cfg.max_grad_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  """The policy loss's settings (`config.rl.loss` of a run, plus the sampler's temperature).

  Validated on construction; an error names the field.
  """
  clip_low: float = 0.2             # ratio clip 1 - clip_low
  clip_high: float = 0.28           # ratio clip 1 + clip_high (DAPO clip-higher)
  dual_clip: float | None = None    # cap -A * dual_clip on negative advantages; None = off
  tis_cap: float | None = None      # truncated importance weight old/behaviour; None = off
  kl_coef: float = 0.0              # 0: no reference model at all
  kl_estimator: str = "mse"         # k1 | k3 (low_var_kl) | mse (k2)
  entropy_coef: float = 0.0
  temperature: float = 1.0          # the sampler's temperature

  def __post_init__(self):
    problems = []
    for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef"):
      if getattr(self, name) < 0:
        problems.append(f"{name}={getattr(self, name)} must be >= 0")
    if self.clip_low >= 1:
      problems.append(f"clip_low={self.clip_low} must be < 1 (the ratio's lower clip is "
                      "1 - clip_low)")
    if self.dual_clip is not None and self.dual_clip <= 1:
      problems.append(f"dual_clip={self.dual_clip} must be > 1 (or None: off)")
    if self.tis_cap is not None and self.tis_cap <= 0:
      problems.append(f"tis_cap={self.tis_cap} must be > 0 (or None: off)")
    if self.kl_estimator not in KL_ESTIMATORS:
      problems.append(f"kl_estimator={self.kl_estimator!r}: expected one of {KL_ESTIMATORS}")
    if not self.temperature > 0:
      problems.append(f"temperature={self.temperature} must be > 0: log-probs at "
                      "temperature 0 divide by zero (greedy decoding is for evaluation)")
    if problems:
      raise ValueError("; ".join(problems))


def policy_loss_fn(cfg: PolicyLossConfig) -> LossFn:
  """loss = sum_t w_t [PG_t + kl_coef KL_t - entropy_coef H_t] over policy tokens."""

  required = ("tokens", "attention_mask", "loss_mask", "advantages", "behaviour_logp")
  required += ("ref_logp",) if cfg.kl_coef else ()

  @reads_first_token
  def loss_fn(model, batch):
    _require(batch, required, "policy")
    logp, entropy = model_token_stats(model, batch, cfg.temperature)
    old_logp = batch.get("old_logp", jax.lax.stop_gradient(logp))
    pg, clipped = clipped_policy_loss(
        logp, old_logp, batch["advantages"], clip_low=cfg.clip_low, clip_high=cfg.clip_high,
        dual_clip=cfg.dual_clip,
        behaviour_logp_BT=batch["behaviour_logp"] if cfg.tis_cap is not None else None,
        tis_cap=cfg.tis_cap)
    loss_BT = pg - cfg.entropy_coef * entropy
    mask, token_w = batch["loss_mask"], batch["token_weight"]
    # KL(sampler || learner): the tokens were sampled by the sampler, so it is the first
    # argument (d = behaviour_logp - logp).
    sampler_kl = kl_penalty(jax.lax.stop_gradient(batch["behaviour_logp"]),
                            jax.lax.stop_gradient(logp), "k3", mask)
    metrics = {
        "pg_loss": (pg * batch["loss_weight"]).sum(),
        "entropy": (entropy * token_w).sum(),
        "clip_frac": (clipped * token_w).sum(),
        "approx_kl_sampler": (sampler_kl * token_w).sum(),
    }
    if cfg.kl_coef:
      kl = kl_penalty(logp, batch["ref_logp"], cfg.kl_estimator, mask)
      loss_BT = loss_BT + cfg.kl_coef * kl
      metrics["kl"] = (kl * token_w).sum()
    return (loss_BT * batch["loss_weight"]).sum(), metrics

  return loss_fn


def sft_loss_fn(temperature: float = 1.0) -> LossFn:
  """Supervised warm start: loss = -sum_t w_t log p(token_t) over the demonstration's policy tokens."""

  @reads_first_token
  def loss_fn(model, batch):
    _require(batch, ("tokens", "attention_mask"), "sft")
    nll = -model_token_stats(model, batch, temperature)[0]
    return (nll * batch["loss_weight"]).sum(), {"nll": (nll * batch["token_weight"]).sum()}

  return loss_fn


def value_loss_fn(clip: float = 0.2) -> LossFn:
  """Clipped value loss of a `ValueModel` against GAE returns, over policy tokens."""

  def loss_fn(model, batch):
    _require(batch, ("tokens", "attention_mask", "returns", "old_values"), "value")
    values = model(batch["tokens"], batch["attention_mask"])
    loss_BT = clipped_value_loss(values, batch["old_values"], batch["returns"], clip)
    return (loss_BT * batch["loss_weight"]).sum(), {
        "value_mean": (values * batch["token_weight"]).sum()}

  return loss_fn


def _require(batch: Batch, keys, what: str):
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"{what} batch lacks {missing} (has {sorted(batch)})")


def optimizer_shardings(optimizer: optax.GradientTransformation, params, mesh: Mesh):
  """Shardings of `optimizer.init(params)`: every params-shaped subtree (Adam's mu, nu) is
  sharded like the (placed) parameters, everything else (step counts) replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  like_params = jax.tree.map(lambda x: x.sharding, params)
  return optax.tree_utils.tree_map_params(
      optimizer, lambda _, sharding: sharding, jax.eval_shape(optimizer.init, params),
      like_params, transform_non_params=lambda _: replicated)


def micro_batch_grads_fn(graphdef, loss_fn: LossFn, num_micro_batches: int, aggregation: str,
                         norm_constant: float | None):
  """grads_of(params, rest, batch, totals, first_token, prefix_rows) -> (grads, metrics),
  the two last static (`reads_first_token`, `shared_prefix_rows`), each summed over
  the M micro-batches of one array batch (a `lax.scan`), with the batch's per-token weights

      loss_weight = aggregation_weights(loss_mask, aggregation, norm_constant, totals)
      token_weight = aggregation_weights(loss_mask, "token_mean", totals=totals)

  computed over the whole step (`totals`), so the sum equals one pass over all rows."""
  m = num_micro_batches

  def grads_of(params, rest, batch, totals, first_token: int = 1, prefix_rows: int = 0):
    batch = dict(batch)
    mask = batch["loss_mask"]
    batch["loss_weight"] = aggregation_weights(mask, aggregation, norm_constant, totals)
    batch["token_weight"] = aggregation_weights(mask, "token_mean", totals=totals)
    # Micro-batch i takes rows i, i+M, i+2M, ...: every device keeps its own rows.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // m, m, *x.shape[1:]).swapaxes(0, 1),
                         batch)

    def micro_step(grads, mb):
      def loss(p):
        return loss_fn(nnx.merge(graphdef, p, rest),
                       {**mb, "first_token": first_token, "prefix_rows": prefix_rows})
      (value, metrics), g = jax.value_and_grad(loss, has_aux=True)(params)
      return jax.tree.map(jnp.add, grads, g), (value, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, metrics) = jax.lax.scan(micro_step, zeros, micro)
    metrics = jax.tree.map(lambda x: x.sum(0), metrics)
    metrics["loss"] = losses.sum()
    return grads, metrics

  return grads_of


class Learner:
  """A model's parameters, optimizer state and its jitted update step.

  Args:
    model: `CausalLM` (policy) or `ValueModel`.
    optimizer: an optax transformation (see `make_optimizer`).
    loss_fn: `policy_loss_fn(...)` or `value_loss_fn(...)`.
    mesh, rules: place parameters, optimizer state and batches on this mesh.
    num_micro_batches: gradient accumulation steps per update (must divide B).
    aggregation, norm_constant: how per-token losses are reduced (see
      `orchestra.rl.losses.aggregation_weights`).
    share_prefixes: rows that begin with the same tokens before `first_loss_token` (a GRPO
      group's prompt) run them once (`orchestra.models.shared_prefix`), when the loss
      reads `first_token`, that saves `MIN_SHARED_SAVING` of the batch's tokens, the model
      `shares_prefixes` and the batch is not split over devices (a split batch would gather
      rows across them); the result is the same.
  """

  def __init__(self, model: nnx.Module, optimizer: optax.GradientTransformation, loss_fn: LossFn,
               *, mesh: Mesh | None = None, rules: Rules | None = None,
               num_micro_batches: int = 1, aggregation: str = "token_mean",
               norm_constant: float | None = None, share_prefixes: bool = True):
    aggregation_weights(jnp.ones((1, 1)), aggregation, norm_constant)   # validate early
    self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
    self.num_micro_batches = num_micro_batches
    self._reads_first_token = getattr(loss_fn, "reads_first_token", False)
    batch_split = 1 if mesh is None else math.prod(mesh.shape[a] for a in BATCH_AXES)
    self._shares_prefixes = (share_prefixes and batch_split == 1
                             and getattr(model, "shares_prefixes", False))
    if mesh is not None:
      param_shardings = state_shardings(params, mesh, rules)
      params = jax.device_put(params, param_shardings)
      self.rest = jax.device_put(self.rest, state_shardings(self.rest, mesh, rules))
      data = batch_sharding(mesh)
    else:
      param_shardings = data = None
    self.params = params
    self._data_sharding = data
    opt_shardings = None if mesh is None else optimizer_shardings(optimizer, params, mesh)
    self.opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(params)

    graphdef = self.graphdef
    grads_of = micro_batch_grads_fn(graphdef, loss_fn, num_micro_batches, aggregation,
                                    norm_constant)

    def accumulate(grads, metrics, params, rest, batch, totals, first_token, prefix_rows):
      more, more_metrics = grads_of(params, rest, batch, totals, first_token, prefix_rows)
      return jax.tree.map(jnp.add, grads, more), jax.tree.map(jnp.add, metrics, more_metrics)

    def apply_grads(params, opt_state, grads, metrics):
      metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, metrics

    self._grads = jax.jit(grads_of, static_argnums=(4, 5),
                          in_shardings=(param_shardings, None, data, None),
                          out_shardings=(param_shardings, None))
    self._accumulate = jax.jit(accumulate, donate_argnums=(0,), static_argnums=(6, 7),
                               in_shardings=(param_shardings, None, param_shardings, None,
                                             data, None),
                               out_shardings=(param_shardings, None))
    self._apply_grads = jax.jit(apply_grads, donate_argnums=(0, 1),
                                in_shardings=(param_shardings, opt_shardings, param_shardings,
                                              None),
                                out_shardings=(param_shardings, opt_shardings, None))

    def logprobs(params, rest, batch, temperature, first_token, prefix_rows):
      batch = {**batch, "first_token": first_token, "prefix_rows": prefix_rows}
      return model_token_stats(nnx.merge(graphdef, params, rest), batch, temperature)[0]

    self._logprobs = jax.jit(logprobs, static_argnums=(3, 4, 5),
                             in_shardings=(param_shardings, None, data), out_shardings=data)

    def apply(params, rest, tokens, attention_mask):
      return nnx.merge(graphdef, params, rest)(tokens, attention_mask)

    self._apply = jax.jit(apply, in_shardings=(param_shardings, None, data, data))

  def update(self, batch: Batch | Sequence[Batch]) -> dict[str, jax.Array]:
    """One optimizer step on `batch`; returns device-side metrics (fetch them late).

    `batch` may be a list of batches of different shapes that together form one batch
    (e.g. rows bucketed by length, each padded only to its own bucket's length): loss
    weights are computed over all of them (`batch_totals`), their gradients summed, and
    one optimizer update applied, exactly as for the rows in a single array.
    """
    batches = [batch] if isinstance(batch, dict) else list(batch)
    for b in batches:
      if b["tokens"].shape[0] % self.num_micro_batches:
        raise ValueError(f"batch of {b['tokens'].shape[0]} rows does not split into "
                         f"{self.num_micro_batches} micro-batches")
    first = [first_loss_token(b["loss_mask"]) if self._reads_first_token else 1
             for b in batches]                                       # from the host arrays
    batches, shared = zip(*(self._with_shared_prefixes(b, f, self.num_micro_batches)
                            for b, f in zip(batches, first)))
    if self._data_sharding is not None:   # no-op for arrays already split over (data, fsdp)
      batches = [jax.device_put(dict(b), self._data_sharding) for b in batches]
    totals = batch_totals([b["loss_mask"] for b in batches])    # over all of `batch`
    grads, metrics = self._grads(self.params, self.rest, batches[0], totals, first[0],
                                 shared[0])
    for b, first_token, u in zip(batches[1:], first[1:], shared[1:], strict=True):
      grads, metrics = self._accumulate(grads, metrics, self.params, self.rest, b, totals,
                                        first_token, u)
    self.params, self.opt_state, metrics = self._apply_grads(self.params, self.opt_state,
                                                             grads, metrics)
    return metrics

  def _with_shared_prefixes(self, batch: Batch, first_token: int, micro_batches: int
                            ) -> tuple[Batch, int]:
    """(the batch with `prefix_first` and `prefix_source`, U) when its rows share their
    first `first_token` tokens (`shared_prefix_rows`), else (the batch, 0)."""
    tokens = batch["tokens"]
    if not self._shares_prefixes or (isinstance(tokens, jax.Array)
                                     and not tokens.is_fully_addressable):
      return batch, 0
    plan = shared_prefix_rows(tokens, batch["attention_mask"], first_token, micro_batches)
    if plan is None:
      return batch, 0
    u, first_B, source_B = plan
    return {**batch, "prefix_first": first_B, "prefix_source": source_B}, u

  def logprobs(self, tokens, attention_mask, temperature: float = 1.0,
               loss_mask=None) -> jax.Array:
    """Current policy log-probs [B, T] (for `old_logp`, or `ref_logp` of a frozen copy).

    With the batch's `loss_mask`, only tokens from `first_loss_token(loss_mask)` on get a
    log-prob (0 before it, where no loss reads one), so the prompt skips the LM head as in
    `update`, and rows sharing their tokens before it run them once (`share_prefixes`)."""
    first_token = 1 if loss_mask is None else first_loss_token(loss_mask)
    batch, u = self._with_shared_prefixes({"tokens": tokens, "attention_mask": attention_mask},
                                          first_token, 1)
    if self._data_sharding is not None:
      batch = jax.device_put(batch, self._data_sharding)
    return self._logprobs(self.params, self.rest, batch, float(temperature), first_token, u)

  def apply(self, tokens, attention_mask) -> jax.Array:
    """The model's output on a batch (`ValueModel`: values [B, T]), jitted."""
    if self._data_sharding is not None:
      tokens, attention_mask = jax.device_put((tokens, attention_mask), self._data_sharding)
    return self._apply(self.params, self.rest, tokens, attention_mask)

  @property
  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params, self.rest)
