"""The performance anchors' GRPO workload through Orchestra's public API, same output keys.

`../shared/bench-anchors/` runs one GRPO step in google-tunix and TRL (tiny Qwen3, 8 prompts
x 4 generations, 64 + 64 tokens, beta 0, one AdamW step); this script runs it with the
library's defaults: `orchestra.models.decoding.generate` for the rollout, the GRPO
advantage (`orchestra.rl.group_estimates`), and `Learner` + `policy_loss_fn` with
`seq_mean_token_mean` aggregation for the update. It prints one `RESULT_JSON {...}` line
with the anchors' keys, so their runner compares all three in one invocation:

  cd ../shared/bench-anchors
  ORCHESTRA_CMD="$PWD/../../main/.venv/bin/python $PWD/../../main/bench/grpo_step.py" \
    python3 run_anchors.py --frameworks orchestra,tunix,trl --reps 3 --tag side_by_side

  python bench/grpo_step.py [--steps 22] [--what all|grpo|micro] [--out FILE]

Timing as the anchors: step = rollout + reward/advantages + update; the median of the
steps after the first two; rollout = the generation call (tokens on the host), update =
forward + backward + optimizer (metrics on the host).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from bench_timing import call_seconds, median_s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS = os.environ.get("ANCHORS_DIR", os.path.join(os.path.dirname(ROOT), "shared",
                                                     "bench-anchors"))


def anchors():
  """The anchors' shared module (shapes, tokenizer, prompts, reward, timers)."""
  if not os.path.isfile(os.path.join(ANCHORS, "anchor_common.py")):
    sys.exit(f"no anchor_common.py in {ANCHORS}: set ANCHORS_DIR to the bench-anchors folder")
  sys.path.insert(0, ANCHORS)
  import anchor_common
  return anchor_common


def build_model(ac, seed: int = 0):
  from flax import nnx

  from orchestra.models import CausalLM, DecoderConfig
  from orchestra.models.config import RopeConfig
  m = ac.MODEL
  cfg = DecoderConfig("qwen3", vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
                      intermediate_size=m["intermediate_size"],
                      num_layers=m["num_hidden_layers"], num_heads=m["num_attention_heads"],
                      num_kv_heads=m["num_key_value_heads"], head_dim=m["head_dim"],
                      qk_norm=True, rope=RopeConfig(theta=float(m["rope_theta"])),
                      rms_norm_eps=m["rms_norm_eps"],
                      tie_word_embeddings=m["tie_word_embeddings"])
  return CausalLM(cfg, rngs=nnx.Rngs(seed))


def median_seconds(fn, iters: int = 5) -> tuple[float, float]:
  """(first call incl. compile, median of `iters` calls after one more warm-up)."""
  (first,) = call_seconds(fn, 1)
  return first, median_s(fn, iters)


def bench_micro(ac, model) -> dict:
  """Raw fwd+bwd (next-token cross-entropy) and forward on 32 x 128; greedy decode."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from orchestra.models.decoding import generate
  ids = jnp.asarray(np.random.RandomState(0).randint(3, ac.MODEL["vocab_size"],
                                                     (ac.FB_BATCH, ac.FB_SEQ)), jnp.int32)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    logits = nnx.merge(graphdef, p, rest)(ids)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1).mean()

  fwd_bwd = jax.jit(jax.value_and_grad(loss))
  fwd = jax.jit(loss)
  first, fb = median_seconds(lambda: jax.block_until_ready(fwd_bwd(params)))
  _, f = median_seconds(lambda: jax.block_until_ready(fwd(params)))
  tok = ac.load_tokenizer()
  prompts = np.asarray([tok.encode(p) for p in ac.make_prompts(tok, ac.DEC_BATCH,
                                                               ac.DEC_PROMPT, seed=1)], np.int32)
  decode = lambda: jax.device_get(generate(model, prompts, max_new_tokens=ac.DEC_NEW))
  dec_first, dec = median_seconds(decode)
  n = ac.FB_BATCH * ac.FB_SEQ
  return dict(fwd_bwd_s_median=fb, fwd_bwd_tok_per_s=n / fb, fwd_bwd_first_call_s=first,
              fwd_only_s_median=f, fwd_only_tok_per_s=n / f,
              greedy_decode_s_median=dec, greedy_decode_first_call_s=dec_first,
              greedy_decode_tok_per_s=ac.DEC_BATCH * ac.DEC_NEW / dec,
              greedy_decode_tokens=ac.DEC_BATCH * ac.DEC_NEW)


class GRPO:
  """One GRPO step of the anchors' workload, as a user of the library writes it."""

  def __init__(self, ac, model):
    from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig,
                                     make_optimizer, policy_loss_fn)
    self.ac, self.tok = ac, ac.load_tokenizer()
    self.reward_fn = ac.make_reward_fn(self.tok)
    prompts = np.asarray([self.tok.encode(p) for p in ac.make_prompts(self.tok, ac.N_PROMPTS)],
                         np.int32)
    self.prompts = np.repeat(prompts, ac.N_GENERATIONS, axis=0)          # [32, 64]
    loss = policy_loss_fn(PolicyLossConfig(clip_low=0.2, clip_high=0.2, kl_coef=0.0,
                                           temperature=ac.TEMPERATURE))
    self.learner = Learner(model, make_optimizer(OptimizerConfig(learning_rate=ac.LR)), loss,
                           aggregation="seq_mean_token_mean")
    self.step_index = 0

  def rollout(self):
    import jax

    from orchestra.models.decoding import Sampler, generate
    rows = len(self.prompts)
    seeds = [self.step_index * rows + i for i in range(rows)]
    tokens, logps = generate(self.learner.model, self.prompts, max_new_tokens=self.ac.MAX_NEW,
                             select=Sampler(self.ac.TEMPERATURE), seeds=seeds)
    return jax.device_get((tokens, logps))

  def batch(self, tokens, logps) -> dict:
    """Rewards, group advantages, and the update's arrays."""
    from orchestra.rl import group_estimates
    texts = self.tok.batch_decode(tokens)
    rewards = np.asarray(self.reward_fn(completions=texts), np.float64)
    g = self.ac.N_GENERATIONS
    adv = np.concatenate([group_estimates(rewards[i:i + g], np.ones(g, bool), "grpo", 0.0)[0]
                          for i in range(0, len(rewards), g)])
    p = self.prompts.shape[1]
    full = np.concatenate([self.prompts, tokens], axis=1)
    loss_mask = np.zeros(full.shape, bool)
    loss_mask[:, p:] = True
    behaviour = np.zeros(full.shape, np.float32)
    behaviour[:, p:] = logps
    return {"tokens": full, "attention_mask": np.ones(full.shape, bool), "loss_mask": loss_mask,
            "behaviour_logp": behaviour,
            "advantages": np.repeat(adv[:, None], full.shape[1], 1).astype(np.float32)}

  def step(self) -> tuple[float, float, float, int, float]:
    """(step s, rollout s, update s, generated tokens, end time)."""
    import jax
    start = time.perf_counter()
    tokens, logps = self.rollout()
    rolled = time.perf_counter()
    batch = self.batch(tokens, logps)
    prepared = time.perf_counter()
    jax.device_get(self.learner.update(batch))
    end = time.perf_counter()
    self.step_index += 1
    return end - start, rolled - start, end - prepared, int(tokens.size), end


def bench_grpo(ac, steps: int) -> dict:
  grpo = GRPO(ac, build_model(ac))
  records = [grpo.step() for _ in range(steps)]
  steady = records[ac.WARMUP_STEPS:]
  step, roll, update, generated = (np.median([r[i] for r in steady]) for i in range(4))
  cadence = np.median(np.diff([r[4] for r in records[ac.WARMUP_STEPS - 1:]]))
  return dict(grpo_steps_measured=len(steady), grpo_first_step_s=records[0][0],
              grpo_step_s_all=[round(r[0], 4) for r in records],
              grpo_step_s_median=float(step), grpo_rollout_s_median=float(roll),
              grpo_update_s_median=float(update),
              grpo_other_s_median=float(step - roll - update),
              grpo_step_cadence_s_median=float(cadence),
              grpo_rollout_tok_per_s=float(generated / roll),
              grpo_gen_tokens_per_step=float(generated))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=22, help="GRPO steps (the first 2 warm up)")
  ap.add_argument("--what", default="all", choices=["all", "grpo", "micro"])
  ap.add_argument("--out", default=None, help="append the JSON line here")
  args = ap.parse_args()
  ac = anchors()
  import jax
  start, monitor = time.perf_counter(), ac.LoadMonitor()
  out = dict(framework="orchestra", backend=f"jax-{jax.default_backend()}", **ac.host_info())
  if args.what in ("all", "micro"):
    model = build_model(ac)
    out["n_params"] = model.config.num_params
    out.update(bench_micro(ac, model))
  if args.what in ("all", "grpo"):
    out.update(bench_grpo(ac, args.steps))
  out["wall_total_s"] = time.perf_counter() - start
  out.update(monitor.result())
  ac.emit(out, args.out)


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  main()
