"""The training run: SFT warm start on teacher demonstrations, then GRPO with the preference reward.

One RL step, as data:
  1. sample `tasks_per_step` train tasks, each with a preference vector;
  2. run `group_size` episodes per task concurrently on the in-process engine;
  3. grade them, compute the ToolOrchestra reward within each group, group
     advantages, and drop homogeneous groups;
  4. one jitted update on the packed batch, then swap the new weights into
     the engine (the next episodes are tagged with the new version).
Checkpoints (params, optimizer state, stage and step) are written every
`checkpoint.every` steps; rerunning the same command resumes from the newest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx
from ml_collections import ConfigDict

from orchestra.agent.episode import EpisodeConfig, Trajectory, run_episode, scripted_completion
from orchestra.checkpoint import CheckpointManager
from orchestra.checkpoint.export import restore_policy
from orchestra.engines import JaxEngine, SamplingParams
from orchestra.models import CausalLM
from orchestra.rewards import keep_group, preference_rewards
from orchestra.rl import group_advantages, rloo_advantages
from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig, make_optimizer,
                                 policy_loss_fn, sft_loss_fn)
from orchestra.train.batching import pack
from orchestra.train.setup import RunSetup

SFT_DIR = "sft"          # the SFT-only policy (eval's `sft` baseline) lives in workdir/sft


def episode_config(config: ConfigDict) -> EpisodeConfig:
  e = config.episode
  return EpisodeConfig(max_turns=e.max_turns, max_total_tokens=e.max_total_tokens,
                       max_observation_tokens=e.max_observation_tokens,
                       price_in_per_1m=e.policy_price_in_per_1m,
                       price_out_per_1m=e.policy_price_out_per_1m)


class TeacherEngine:
  """Replays a teacher's tool calls as policy turns, so demos go through the real loop."""

  weight_version = -1

  def __init__(self, tokenizer, calls):
    self.tokenizer, self.calls = tokenizer, list(calls)

  async def generate(self, prompt_ids, sampling):
    return scripted_completion(self.tokenizer, *self.calls.pop(0), self.weight_version)


async def teacher_demos(setup: RunSetup, n: int, seed: int) -> list[Trajectory]:
  """`n` demonstrations on train tasks, with real tool observations."""
  rng = random.Random(seed)
  tasks = setup.env.tasks("train")
  prefs = list(setup.config.train_preferences)
  cfg, sampling = episode_config(setup.config), SamplingParams()
  sem = asyncio.Semaphore(64)

  async def one(task):
    calls = setup.env.teacher_calls(task, setup.tool_names, rng)
    async with sem:
      return await run_episode(TeacherEngine(setup.tokenizer, calls), setup.tokenizer,
                               setup.tools_for(task), setup.messages(task, rng.choice(prefs)),
                               sampling, cfg)

  demos = await asyncio.gather(*(one(rng.choice(tasks)) for _ in range(n)))
  return [d for d in demos if d.finish_reason == "answer"]


def score_group(setup: RunSetup, task, preference: np.ndarray, trajs: list[Trajectory]):
  """(rewards [G], advantages [G], keep [G]) of one group, per DESIGN section 2."""
  rl = setup.config.rl
  valid = np.asarray([t.format_ok for t in trajs])
  keep = valid if rl.invalid_format == "drop" else np.ones(len(trajs), bool)
  correct = np.asarray([setup.env.grade(task, t.answer) for t in trajs]) & valid
  rewards = np.zeros(len(trajs))
  advantages = np.zeros(len(trajs))
  if keep.any():
    idx = np.flatnonzero(keep)
    calls = [[trajs[i].tool_calls.get(name, 0) for name in setup.tool_names] for i in idx]
    r = preference_rewards(calls, correct[idx], [trajs[i].cost_usd for i in idx],
                           [trajs[i].latency_s for i in idx], preference)
    rewards[idx] = r
    if keep_group(r, rl.std_threshold):
      estimator = group_advantages if rl.algorithm == "grpo" else rloo_advantages
      advantages[idx] = np.asarray(estimator(r))
    else:
      keep[:] = False
  return rewards, advantages, keep, correct


class MetricsWriter:
  """Metrics per step to `metrics.jsonl` and TensorBoard (`tb/`)."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: dict):
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    for key, value in metrics.items():
      if isinstance(value, (int, float)):
        self.tb.add_scalar(key, value, step)
    self.tb.flush()


def _save(manager: CheckpointManager, step: int, learner: Learner, setup: RunSetup, stage: str):
  manager.save(step, {"params": learner.params, "train_state": {"opt_state": learner.opt_state}},
               {"stage": stage, "model_config": setup.model_config.to_dict()})


def train(setup: RunSetup, workdir: str, progress: bool = True) -> dict:
  """Runs (or resumes) SFT then RL; returns the last RL step's metrics."""
  config = setup.config
  sft_steps, rl_steps = config.sft.steps, config.rl.total_steps
  manager = CheckpointManager(workdir, keep_last=config.checkpoint.keep)
  writer = MetricsWriter(workdir)
  model = CausalLM(setup.model_config, rngs=nnx.Rngs(config.seed))
  step, stage = 0, "sft"
  latest = manager.latest_step()
  if latest is not None:
    meta = manager.restore_metadata(latest)
    step, stage = latest, meta["stage"]
    logging.info("resuming %s at step %d", stage, step)

  bar = _progress(progress, sft_steps + rl_steps, step)
  if step < sft_steps:
    learner = Learner(model, make_optimizer(OptimizerConfig(
        learning_rate=config.sft.learning_rate, warmup_steps=config.sft.warmup_steps,
        schedule="cosine", total_steps=sft_steps)), sft_loss_fn())
    if latest is not None:
      _restore(manager, learner)
    demos = asyncio.run(teacher_demos(setup, config.sft.num_demos, config.seed))
    rng = np.random.RandomState(config.seed)
    order = [rng.permutation(len(demos)) for _ in range(sft_steps * config.sft.batch_size
                                                       // len(demos) + 1)]
    order = np.concatenate(order)
    while step < sft_steps:
      start = time.perf_counter()
      rows = order[step * config.sft.batch_size:(step + 1) * config.sft.batch_size]
      batch = pack([demos[i] for i in rows])
      metrics = jax.device_get(learner.update(batch))
      step += 1
      writer.write(step, {"stage": "sft", "nll": float(metrics["nll"]),
                          "grad_norm": float(metrics["grad_norm"]),
                          "tokens_per_s": float(batch["attention_mask"].sum()
                                                / (time.perf_counter() - start))})
      bar(step, f"sft nll {float(metrics['nll']):.3f}")
      if step == sft_steps:            # the SFT-only baseline first, so a resume always has it
        with CheckpointManager(os.path.join(workdir, SFT_DIR), keep_last=1) as sft_manager:
          _save(sft_manager, step, learner, setup, "sft")
          sft_manager.wait()
      if step % config.checkpoint.every == 0 or step == sft_steps:
        _save(manager, step, learner, setup, "sft")
    manager.wait()
    model = learner.model
    latest = None                      # RL starts with a fresh optimizer

  learner = Learner(model, make_optimizer(OptimizerConfig(
      learning_rate=config.rl.learning_rate, warmup_steps=config.rl.warmup_steps)),
      policy_loss_fn(PolicyLossConfig(clip_low=config.rl.clip_low, clip_high=config.rl.clip_high,
                                      kl_coef=config.rl.kl_coef,
                                      entropy_coef=config.rl.entropy_coef,
                                      temperature=config.episode.temperature)))
  if latest is not None and stage == "rl":
    _restore(manager, learner)
  elif step == sft_steps and latest is not None:
    _restore_params_only(manager, learner)
  # The KL reference is the post-SFT policy, frozen; with kl_coef 0 it is never built.
  reference = None
  if config.rl.kl_coef:
    sft_policy, _ = restore_policy(os.path.join(workdir, SFT_DIR))
    reference = Learner(sft_policy, optax.set_to_zero(), sft_loss_fn())
  engine = JaxEngine(learner.model, weight_version=step)
  metrics = {}
  while step < sft_steps + rl_steps:
    metrics = asyncio.run(rl_step(setup, learner, engine, step, reference))
    step += 1
    # In-process weight sync: the engine now samples with the updated parameters.
    asyncio.run(engine.update_weights(learner.params, step))
    writer.write(step, {"stage": "rl", **metrics})
    bar(step, f"rl reward {metrics['reward']:.3f} acc {metrics['accuracy']:.2f}")
    if step % config.checkpoint.every == 0 or step == sft_steps + rl_steps:
      _save(manager, step, learner, setup, "rl")
  manager.wait()
  manager.close()
  return metrics


async def rl_step(setup: RunSetup, learner: Learner, engine: JaxEngine, step: int,
                  reference: Learner | None = None) -> dict:
  """One GRPO step: rollouts, rewards, advantages, update. Returns host-side metrics.

  `reference` (a frozen policy) supplies `ref_logp` for the KL penalty when kl_coef > 0.
  """
  config = setup.config
  rl, e = config.rl, config.episode
  rng = np.random.RandomState(config.seed * 100_003 + step)     # resume-safe: a function of step
  tasks = setup.env.tasks("train")
  picks = rng.choice(len(tasks), rl.tasks_per_step, replace=False)
  prefs = rng.choice(list(config.train_preferences), rl.tasks_per_step)
  sampling = SamplingParams(max_tokens=e.turn_tokens, temperature=e.temperature)
  ep_cfg = episode_config(config)
  sem = asyncio.Semaphore(rl.max_concurrent_episodes)

  async def episode(task, pref, seed, k):
    async with sem:
      seeded = dataclasses.replace(sampling, seed=seed + k)
      return await run_episode(engine, setup.tokenizer, setup.tools_for(task),
                               setup.messages(task, pref), seeded, ep_cfg)

  start = time.perf_counter()
  seeds = rng.randint(0, 2**30, rl.tasks_per_step)
  groups = await asyncio.gather(*(
      asyncio.gather(*(episode(tasks[i], p, int(s) * rl.group_size, k)
                       for k in range(rl.group_size)))
      for i, p, s in zip(picks, prefs, seeds, strict=True)))
  rollout_s = time.perf_counter() - start

  batch_trajs, batch_adv, rewards, correct_all, kept_groups = [], [], [], [], 0
  for i, p, trajs in zip(picks, prefs, groups, strict=True):
    r, a, keep, correct = score_group(setup, tasks[i], setup.preference(p), list(trajs))
    rewards.extend(r)
    correct_all.extend(correct)
    kept_groups += int(keep.any())
    batch_trajs += [t for t, k in zip(trajs, keep, strict=True) if k]
    batch_adv += [x for x, k in zip(a, keep, strict=True) if k]
  all_trajs = [t for g in groups for t in g]
  metrics = {
      "reward": float(np.mean(rewards)), "accuracy": float(np.mean(correct_all)),
      "cost_usd": float(np.mean([t.cost_usd for t in all_trajs])),
      "latency_s": float(np.mean([t.latency_s for t in all_trajs])),
      "format_ok": float(np.mean([t.format_ok for t in all_trajs])),
      "kept_groups": kept_groups, "rollout_s": rollout_s,
      "generated_tokens": int(sum(sum(t.loss_mask) for t in all_trajs)),
  }
  for name in setup.tool_names:
    metrics[f"calls/{name}"] = float(np.mean([t.tool_calls.get(name, 0) for t in all_trajs]))
  if batch_trajs:
    start = time.perf_counter()
    batch = pack(batch_trajs, batch_adv, max_length=e.max_total_tokens)
    if reference is not None:
      batch["ref_logp"] = reference.logprobs(batch["tokens"], batch["attention_mask"],
                                             e.temperature)
    update = jax.device_get(learner.update(batch))
    metrics["update_s"] = time.perf_counter() - start
    metrics["train_tokens_per_s"] = float(batch["attention_mask"].sum() / metrics["update_s"])
    metrics.update({k: float(v) for k, v in update.items()})
  return metrics


def _restore(manager: CheckpointManager, learner: Learner):
  items, _ = manager.restore({"params": learner.params,
                              "train_state": {"opt_state": learner.opt_state}})
  learner.params = items["params"]
  learner.opt_state = items["train_state"]["opt_state"]


def _restore_params_only(manager: CheckpointManager, learner: Learner):
  items, _ = manager.restore({"params": learner.params})
  learner.params = items["params"]


def _progress(enabled: bool, total: int, initial: int):
  """update(step, text): a tqdm bar with ETA (or nothing)."""
  if not enabled:
    return lambda step, text: None
  from tqdm import tqdm
  bar = tqdm(total=total, initial=initial, dynamic_ncols=True)

  def update(step, text):
    bar.n = step
    bar.set_description(text)
    bar.refresh()

  return update
