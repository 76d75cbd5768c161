"""GRPO/PPO update steps on a tiny Qwen3: learning, exact accumulation, sharding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compiled import forward
from flax import nnx

from orchestra.models import CausalLM, DecoderConfig, ValueModel
from orchestra.rl import gae, token_entropy, token_logprobs
from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig, make_optimizer,
                                 shared_prefix_rows,
                                 make_schedule, policy_loss_fn, value_loss_fn)
from orchestra.sharding import make_mesh

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def make_batch(b=8, t=12, seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, CFG.vocab_size, (b, t)).astype(np.int32)
  attention = np.ones((b, t), bool)
  attention[1, :3] = False                       # a left-padded row
  loss_mask = np.zeros((b, t), bool)
  loss_mask[:, 5:9] = True                       # first policy turn
  loss_mask[:, 10:] = True                       # second turn; 9 is a tool observation
  loss_mask &= attention
  adv = np.where(np.arange(b) % 2 == 0, 1.0, -1.0)[:, None] * np.ones((1, t))
  return {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(attention),
          "loss_mask": jnp.asarray(loss_mask), "advantages": jnp.asarray(adv, jnp.float32)}


def policy_learner(lr=1e-2, micro=1, mesh=None, loss_cfg=None, opt=None, **kw):
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  opt = opt or make_optimizer(OptimizerConfig(learning_rate=lr, max_grad_norm=1.0))
  return Learner(model, opt, policy_loss_fn(loss_cfg or PolicyLossConfig()), mesh=mesh, num_micro_batches=micro, **kw)


def with_logprobs(learner, batch):
  logp = learner.logprobs(batch["tokens"], batch["attention_mask"])
  return {**batch, "behaviour_logp": logp, "old_logp": logp}


def test_grpo_steps_raise_positive_and_lower_negative_advantage_tokens():
  learner = policy_learner()
  batch = with_logprobs(learner, make_batch())
  before = np.asarray(batch["old_logp"])
  losses = [float(learner.update(batch)["loss"]) for _ in range(4)]
  assert losses[-1] < losses[0]
  after = np.asarray(learner.logprobs(batch["tokens"], batch["attention_mask"]))
  mask = np.asarray(batch["loss_mask"])
  gain = ((after - before) * mask).sum(1) / mask.sum(1)
  assert (gain[0::2] > 0).all() and (gain[1::2] < 0).all(), gain


def test_masked_tokens_get_no_gradient_signal():
  """Changing advantages on prompt/observation tokens must not change the update."""
  a, b = policy_learner(), policy_learner()
  batch = with_logprobs(a, make_batch())
  noisy = dict(batch)
  noisy["advantages"] = jnp.where(batch["loss_mask"], batch["advantages"], 123.0)
  a.update(batch)
  b.update(noisy)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("aggregation, const", [("token_mean", None),
                                                ("seq_mean_token_mean", None),
                                                ("seq_sum_norm", 12.0)])
def test_gradient_accumulation_equals_full_batch(aggregation, const):
  # Plain SGD with lr 1: the parameter change is the gradient itself (Adam's first
  # step, g / |g|, would amplify float noise in near-zero gradients).
  full = policy_learner(micro=1, aggregation=aggregation, norm_constant=const, opt=optax.sgd(1.0))
  accum = policy_learner(micro=4, aggregation=aggregation, norm_constant=const, opt=optax.sgd(1.0))
  batch = with_logprobs(full, make_batch())
  m_full, m_accum = full.update(batch), accum.update(batch)
  np.testing.assert_allclose(float(m_full["loss"]), float(m_accum["loss"]), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(m_full["grad_norm"]), float(m_accum["grad_norm"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(accum.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize("aggregation, const", [("token_mean", None),
                                                ("seq_mean_token_mean", None),
                                                ("seq_sum_norm", 12.0)])
def test_a_length_bucketed_batch_updates_exactly_as_one_array(aggregation, const):
  """Rows split by length into two arrays (the short ones cut to their own length, as
  `orchestra.train.batching.pack_buckets` does) plus an all-padding row give the update
  of the single right-padded array."""
  whole = policy_learner(aggregation=aggregation, norm_constant=const, opt=optax.sgd(1.0))
  split = policy_learner(aggregation=aggregation, norm_constant=const, opt=optax.sgd(1.0))
  batch = with_logprobs(whole, make_batch())
  for k in ("attention_mask", "loss_mask"):     # rows 0-3 end at 9 tokens: a shorter bucket
    batch[k] = batch[k].at[:4, 9:].set(False)
  short = {k: v[:4, :9] for k, v in batch.items()}
  long = {k: jnp.concatenate([v[4:], jnp.zeros_like(v[:1])]) for k, v in batch.items()}
  m_whole, m_split = whole.update(batch), split.update([short, long])
  np.testing.assert_allclose(float(m_whole["loss"]), float(m_split["loss"]), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(float(m_whole["grad_norm"]), float(m_split["grad_norm"]),
                             rtol=1e-5)
  for x, y in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_metrics_and_kl_reference():
  learner = policy_learner(loss_cfg=PolicyLossConfig(kl_coef=0.1, kl_estimator="k3"))
  batch = with_logprobs(learner, make_batch())
  with pytest.raises(KeyError, match="ref_logp"):
    learner.update(batch)
  metrics = learner.update({**batch, "ref_logp": batch["old_logp"]})
  assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-7)          # policy == reference
  assert float(metrics["approx_kl_sampler"]) == pytest.approx(0.0, abs=1e-7)
  assert float(metrics["clip_frac"]) == 0.0                             # ratio 1 on step one
  assert 0 < float(metrics["entropy"]) <= np.log(CFG.vocab_size) + 1e-5
  assert float(metrics["grad_norm"]) > 0


class FixedLogits:
  """A stand-in policy with given logits (the losses read `CausalLM.token_stats`)."""

  def __init__(self, logits_BTV):
    self.logits_BTV = logits_BTV

  def token_stats(self, tokens_BT, attention_mask_BT, temperature, first_token=1):
    before = jnp.arange(tokens_BT.shape[1]) < first_token
    return (jnp.where(before, 0.0, token_logprobs(self.logits_BTV, tokens_BT, temperature)),
            jnp.where(before, 0.0, token_entropy(self.logits_BTV, temperature)))


def test_approx_kl_sampler_is_kl_of_sampler_from_learner():
  """Hand case: sampler p = [.7, .2, .1], learner q = [.3, .4, .3] at every position.

  Ten sampled tokens in the sampler's exact proportions (7 x 0, 2 x 1, 1 x 2): the mean of
  k3 over them is E_p[q/p - 1 - log(q/p)] = KL(p || q) = 0.3446 (KL(q || p) = 0.3527).
  """
  p, q = np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.4, 0.3])
  tokens = jnp.asarray([[0] + [0] * 7 + [1] * 2 + [2]], jnp.int32)      # t = 0 is the prompt
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(q, jnp.float32)), (1, 11, 3))
  mask = jnp.asarray([[False] + [True] * 10])
  behaviour = jnp.where(mask, jnp.log(jnp.asarray(p, jnp.float32))[tokens], 0.0)
  weight = mask / mask.sum()
  batch = {"tokens": tokens, "attention_mask": jnp.ones_like(mask), "loss_mask": mask,
           "advantages": jnp.zeros((1, 11)), "behaviour_logp": behaviour,
           "loss_weight": weight, "token_weight": weight}
  _, metrics = policy_loss_fn(PolicyLossConfig())(FixedLogits(logits), batch)
  kl_p_q = float((p * np.log(p / q)).sum())
  assert kl_p_q == pytest.approx(0.3446, abs=1e-4)
  assert float(metrics["approx_kl_sampler"]) == pytest.approx(kl_p_q, abs=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0.0, "temperature=0.0 must be > 0"),
    ("dual_clip", 0.5, "dual_clip=0.5 must be > 1"),
    ("kl_estimator", "k4", "kl_estimator='k4'"),
    ("clip_low", -0.1, "clip_low=-0.1 must be >= 0"),
])
def test_policy_loss_config_names_the_bad_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    PolicyLossConfig(**{field: value})


def test_ppo_policy_and_value_steps():
  batch = make_batch()
  policy = policy_learner(lr=5e-3)
  batch = with_logprobs(policy, batch)
  critic = Learner(ValueModel(CFG, rngs=nnx.Rngs(1)),
                   make_optimizer(OptimizerConfig(learning_rate=1e-2)), value_loss_fn(0.5))
  values = forward(critic.model, batch["tokens"], batch["attention_mask"])
  rewards = jnp.zeros_like(values).at[:, -1].set(jnp.where(jnp.arange(8) % 2 == 0, 1.0, 0.0))
  adv, returns = gae(rewards, values, batch["loss_mask"], gamma=1.0, lam=0.95)
  ppo_batch = {**batch, "advantages": adv, "returns": returns, "old_values": values}
  value_losses = [float(critic.update(ppo_batch)["loss"]) for _ in range(5)]
  policy_losses = [float(policy.update(ppo_batch)["loss"]) for _ in range(3)]
  assert value_losses[-1] < value_losses[0]
  assert policy_losses[-1] < policy_losses[0]


def test_sharded_update_equals_single_device():
  single = policy_learner(opt=optax.sgd(1.0))
  sharded = policy_learner(opt=optax.sgd(1.0), mesh=make_mesh((2, 2, 2)))
  batch = with_logprobs(single, make_batch())
  single.update(batch)
  sharded.update(batch)
  for x, y in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  q = sharded.params["model"]["layers"][0]["attn"]["q_proj"][...]
  assert q.sharding.shard_shape(q.shape) == (8, 2, 8)       # D/4 over (data, fsdp), H/2 over tensor


def test_adam_moments_follow_parameter_shardings():
  learner = policy_learner(mesh=make_mesh((1, 8, 1)))
  learner.update(with_logprobs(learner, make_batch()))
  q = learner.params["model"]["layers"][0]["attn"]["q_proj"][...]
  same_shape = [x for x in jax.tree.leaves(learner.opt_state) if x.shape == q.shape]
  assert len(same_shape) == 2 * CFG.num_layers               # mu and nu of each q_proj
  assert all(x.sharding.is_equivalent_to(q.sharding, 3) for x in same_shape)


def test_schedules():
  warm = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=4))
  assert float(warm(0)) == 0.0 and float(warm(2)) == 0.5 and float(warm(10)) == 1.0
  cos = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="cosine", warmup_steps=0,
                                      total_steps=10, end_lr_ratio=0.1))
  assert float(cos(0)) == pytest.approx(1.0) and float(cos(10)) == pytest.approx(0.1)
  assert float(cos(5)) == pytest.approx(0.1 + 0.9 * 0.5)
  with pytest.raises(ValueError, match="schedule='linear'"):
    OptimizerConfig(schedule="linear")


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", -1e-3, "learning_rate=-0.001 must be > 0"),
    ("learning_rate", 0.0, "learning_rate=0.0 must be > 0"),
    ("warmup_steps", -1, "warmup_steps=-1"),
    ("end_lr_ratio", 2.0, "end_lr_ratio=2.0 must be in"),
    ("max_grad_norm", 0.0, "max_grad_norm=0.0 must be > 0")])
def test_optimizer_config_validates_itself_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    OptimizerConfig(**{field: value})


def test_first_loss_token_rounds_down_to_the_multiple():
  from orchestra.rl.update import FIRST_TOKEN_MULTIPLE, first_loss_token
  assert FIRST_TOKEN_MULTIPLE == 64
  mask = np.zeros((3, 256), bool)
  assert first_loss_token(mask) == 1                        # no loss token at all
  mask[1, 200:] = True
  assert first_loss_token(mask) == 192
  mask[2, 130:140] = True
  assert first_loss_token(mask) == 128                      # the earliest row decides
  mask[0, 63] = True
  assert first_loss_token(mask) == 1                        # rounded down to 0 -> 1
  assert first_loss_token(jnp.asarray(mask[1:])) == 128     # device arrays too


@pytest.mark.parametrize("kind", ["policy", "sft"])
def test_update_skipping_the_prompt_logits_equals_the_full_update(kind, monkeypatch):
  """A batch whose loss starts at token 70: the update takes no logits before token 64
  (`first_loss_token`), and its parameters equal an update that takes them all."""
  from orchestra.rl import update as update_module
  from orchestra.rl.update import sft_loss_fn
  rng = np.random.RandomState(3)
  tokens = rng.randint(0, CFG.vocab_size, (8, 128)).astype(np.int32)
  loss_mask = np.zeros((8, 128), bool)
  loss_mask[:, 70:] = True
  loss_mask[3, 70:100] = False                    # a row whose answer starts later
  batch = {"tokens": tokens, "attention_mask": np.ones((8, 128), bool), "loss_mask": loss_mask,
           "advantages": rng.randn(8, 128).astype(np.float32),
           "behaviour_logp": np.zeros((8, 128), np.float32)}
  assert update_module.first_loss_token(loss_mask) == 64

  def updated_params():
    model = CausalLM(CFG, rngs=nnx.Rngs(0))
    loss = policy_loss_fn(PolicyLossConfig()) if kind == "policy" else sft_loss_fn()
    learner = Learner(model, optax.sgd(0.5), loss)
    metrics = jax.device_get(learner.update(batch))
    return jax.device_get(learner.params), metrics
  windowed, windowed_metrics = updated_params()
  monkeypatch.setattr(update_module, "first_loss_token", lambda mask: 1)
  full, full_metrics = updated_params()
  for key in full_metrics:
    np.testing.assert_allclose(windowed_metrics[key], full_metrics[key], rtol=1e-5, atol=1e-6)
  for got, want in zip(jax.tree.leaves(windowed), jax.tree.leaves(full), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_only_losses_that_read_the_first_token_compile_per_first_token():
  """Loss masks starting at token 2 and at token 70 (first tokens 1 and 64): the policy
  update compiles once for each, the value update, whose loss takes no logits, once."""
  rng = np.random.RandomState(4)

  def batch(start):
    loss_mask = np.zeros((8, 128), bool)
    loss_mask[:, start:] = True
    values = rng.randn(8, 128).astype(np.float32)
    return {"tokens": rng.randint(0, CFG.vocab_size, (8, 128)).astype(np.int32),
            "attention_mask": np.ones((8, 128), bool), "loss_mask": loss_mask,
            "advantages": values, "behaviour_logp": np.zeros((8, 128), np.float32),
            "returns": values, "old_values": values}
  policy = policy_learner()
  critic = Learner(ValueModel(CFG, rngs=nnx.Rngs(1)), optax.sgd(0.1), value_loss_fn(0.5))
  for start in (2, 70):
    jax.device_get((policy.update(batch(start)), critic.update(batch(start))))
  assert policy._grads._cache_size() == 2
  assert critic._grads._cache_size() == 1


def test_logprobs_with_a_loss_mask_equal_the_full_ones_where_a_loss_reads_them():
  """`Learner.logprobs(..., loss_mask=)` (the KL reference's `ref_logp`): from the first loss
  token's window on (64 here, the loss starts at 70) the full log-probs, 0 before it."""
  rng = np.random.RandomState(5)
  tokens = rng.randint(0, CFG.vocab_size, (4, 128)).astype(np.int32)
  attention = np.ones((4, 128), bool)
  loss_mask = np.zeros((4, 128), bool)
  loss_mask[:, 70:] = True
  learner = policy_learner()
  full = np.asarray(learner.logprobs(tokens, attention, 0.7))
  windowed = np.asarray(learner.logprobs(tokens, attention, 0.7, loss_mask=loss_mask))
  np.testing.assert_allclose(windowed[:, 64:], full[:, 64:], rtol=1e-5, atol=1e-6)
  assert (windowed[:, :64] == 0).all() and (full[:, 1:64] != 0).all()


def grpo_groups_batch(seed=6):
  """16 rows of 96 tokens: 4 prompts x 4 completions, the loss from token 70 on (first
  token 64), one prompt left-padded; rows 12-15 differ in their first 64 tokens: 12 and 14
  begin alike, 13 and 15 begin alike (five distinct starts, two in each half)."""
  rng = np.random.RandomState(seed)
  prompts = rng.randint(1, CFG.vocab_size, (4, 70))
  tokens = np.concatenate([np.repeat(prompts, 4, axis=0),
                           rng.randint(1, CFG.vocab_size, (16, 26))], 1).astype(np.int32)
  tokens[12:16, :64] = np.tile(rng.randint(1, CFG.vocab_size, (2, 64)), (2, 1))
  attention = np.ones((16, 96), bool)
  attention[4:8, :10] = False
  loss_mask = np.zeros((16, 96), bool)
  loss_mask[:, 70:] = True
  return {"tokens": tokens, "attention_mask": attention, "loss_mask": loss_mask,
          "advantages": np.repeat(rng.randn(16, 1), 96, 1).astype(np.float32),
          "behaviour_logp": -np.abs(rng.randn(16, 96)).astype(np.float32) * loss_mask}


def test_shared_prefix_rows_per_micro_batch():
  batch = grpo_groups_batch()
  tokens, attention = batch["tokens"], batch["attention_mask"]
  for micro in (1, 2):
    u, first_B, source_B = shared_prefix_rows(tokens, attention, 64, micro)
    for i in range(micro):
      rows = np.arange(i, 16, micro)             # micro-batch i, as `micro_batch_grads_fn` splits
      first, source = first_B[i::micro][:u], source_B[i::micro]
      np.testing.assert_array_equal(tokens[rows[first[source]], :64], tokens[rows, :64])
      np.testing.assert_array_equal(attention[rows[first[source]], :64], attention[rows, :64])
      assert len(set(source)) == (5 if micro == 1 else 4)
    assert u == (8 if micro == 1 else 4)          # padded to a power of two
  assert shared_prefix_rows(tokens, attention, 1) is None
  # 8 of 16 rows' 64 tokens: a third of 16 x 96 saved, worth it at 0.33, not at 0.34
  assert shared_prefix_rows(tokens, attention, 64, min_saving=0.33) is not None
  assert shared_prefix_rows(tokens, attention, 64, min_saving=0.34) is None
  assert shared_prefix_rows(tokens[12:14], attention[12:14], 64) is None   # nothing shared
  assert shared_prefix_rows(tokens[11:15], attention[11:15], 64, 2) is None   # half shares


@pytest.mark.parametrize("micro", [1, 2])
def test_an_update_sharing_prompts_equals_the_plain_update(micro):
  """The same update, its metrics and log-probs with and without `share_prefixes` (plain
  SGD, so the parameter change is the gradient)."""
  batch = grpo_groups_batch()
  learners = [policy_learner(micro=micro, opt=optax.sgd(0.5), share_prefixes=share)
              for share in (True, False)]
  assert learners[0]._with_shared_prefixes(batch, 64, micro)[1] == 8 // micro
  assert learners[1]._with_shared_prefixes(batch, 64, micro)[1] == 0
  logps = [np.asarray(lr.logprobs(batch["tokens"], batch["attention_mask"], 0.9,
                                  loss_mask=batch["loss_mask"])) for lr in learners]
  np.testing.assert_allclose(logps[0], logps[1], atol=2e-5, rtol=0)
  shared, plain = (jax.device_get(lr.update(batch)) for lr in learners)
  for key in plain:
    np.testing.assert_allclose(shared[key], plain[key], rtol=1e-5, atol=1e-6)
  for got, want in zip(jax.tree.leaves(learners[0].params), jax.tree.leaves(learners[1].params),
                       strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
