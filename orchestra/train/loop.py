"""The training run: SFT warm start on teacher demonstrations, then RL with the preference reward.

One RL step, as data:
  1. sample `tasks_per_step` train tasks, each with a preference vector;
  2. run `group_size` episodes per task concurrently on the rollout engine (in-process,
     or servers; orchestra/train/rollouts.py) with `setup.rollout`: a toolscale-mini
     episode, a conversation on a tau2-format domain, or a QA item (setup.py,
     domain_setup.py, qa_setup.py);
  3. grade them and compute the ToolOrchestra reward within each group;
  4. advantages: GRPO (group z-score) or RLOO per group, dropping homogeneous
     groups; or PPO, where a value model (initialised from the SFT policy's
     trunk) gives per-token GAE advantages and is updated on the returns;
  5. one jitted update on the packed batch, then swap the new weights into
     the engine (the next episodes are tagged with the new version).
With `rollout.max_staleness = 1` the rollout servers sample step k + 1's episodes (2.)
while step k's update (3.-5.) runs, on the weights before it; the update of step k + 1
then corrects for that one-version lag with the truncated importance weight
(`rl.loss.tis_cap`), and the sync waits for those episodes to finish.
The policy, PPO's critic and the KL reference live on the mesh of `config.mesh`
(float32 parameters, `config.model.dtype` compute: orchestra/train/placement.py).
Checkpoints (params, optimizer state, the value model's for PPO, stage and
step) are written every `checkpoint.every` steps; rerunning the same command
resumes from the newest.

Over several processes (`launch/train.py --num_processes=N`, orchestra/sharding/
multihost.py) every process runs this loop on one global mesh; process 0 alone runs
the teacher demonstrations and the rollouts and broadcasts them, so all processes
pack the same global batch, and process 0 alone writes metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from orchestra.agent.episode import Trajectory
from orchestra.checkpoint import SFT_DIR, CheckpointError, CheckpointManager, StepNotRestored
from orchestra.checkpoint.export import restore_policy
from orchestra.checkpoint.hf import load_hf
from orchestra.engines import SamplingParams
from orchestra.models import CausalLM, DecoderConfig, ValueModel
from orchestra.rewards import group_rewards
from orchestra.rl import gae, group_estimates, terminal_rewards, whiten
from orchestra.rl.update import (Learner, make_optimizer, policy_loss_fn,
                                 sft_loss_fn, value_loss_fn)
from orchestra.sharding.multihost import broadcast_object, is_main, to_host
from orchestra.train.batching import pack, pack_buckets
from orchestra.train.placement import PARAM_DTYPE, compute_dtype, data_parallel_size, run_mesh
from orchestra.train.rollouts import Rollouts, RolloutsFailed, open_rollouts, rollout_policy
from orchestra.train.setup_base import (Rollout, memory_options, optimizer_config,
                                        policy_loss_config)



async def teacher_demos(setup, n: int, seed: int) -> list[Trajectory]:
  """`n` demonstrations on train tasks, with real tool observations (failed ones dropped)."""
  rng = random.Random(seed)
  tasks = setup.tasks("train")
  prefs = list(setup.config.train_preferences)
  sem = asyncio.Semaphore(64)

  async def one(task):
    preference = rng.choice(prefs)
    turns = setup.teacher_turns(task, preference, rng)
    async with sem:
      return await setup.demo(task, preference, turns)

  demos = await asyncio.gather(*(one(rng.choice(tasks)) for _ in range(n)))
  kept = [d for d in demos if d is not None]
  if n and not kept:
    raise ValueError(f"none of the {n} teacher demonstrations reached an answer within "
                     f"config.episode (max_total_tokens={setup.config.episode.max_total_tokens}, "
                     f"max_turns={setup.config.episode.max_turns}): is the prompt longer than "
                     "the token budget?")
  return kept


def score_group(setup, preference: np.ndarray, rollouts: list[Rollout]):
  """(rewards [G], keep [G], correct [G]) of one group: `orchestra.rewards.group_rewards`
  over the rollouts' trajectories (lost episodes always dropped; invalid-format ones by
  `rl.invalid_format`)."""
  trajs = [r.trajectory for r in rollouts]
  return group_rewards(
      [[t.tool_calls.get(name, 0) for name in setup.tool_names] for t in trajs],
      [r.correct for r in rollouts], [t.cost_usd for t in trajs], [t.latency_s for t in trajs],
      preference, format_ok_G=[t.format_ok for t in trajs], lost_G=[t.lost for t in trajs],
      invalid_format=setup.config.rl.invalid_format)


def ppo_targets(critic: Learner, batch: dict, episode_rewards: np.ndarray, rl: ConfigDict):
  """Adds GAE `advantages`, `returns` and `old_values` to a packed batch (in place).

  The episode's reward R is given at its last policy token; GAE runs over policy
  tokens only (`orchestra.rl.gae`). Advantages are whitened over the batch's
  policy tokens: A <- (A - mean A) / (std A + 1e-6).
  """
  mask = batch["loss_mask"]
  values = to_host(critic.apply(batch["tokens"], batch["attention_mask"]))
  adv, returns = gae(terminal_rewards(mask, episode_rewards), values, mask, gamma=rl.gamma,
                     lam=rl.gae_lambda)
  batch.update(advantages=np.asarray(whiten(adv, mask)), returns=np.asarray(returns),
               old_values=values)
  return batch


ROWS_BUCKET = 16          # RL batches are padded to a multiple of this many rows
SFT_ROWS_BUCKET = 8       # SFT's short-length bucket: this many rows (its long one: half)


class MetricsWriter:
  """Metrics per step to `metrics.jsonl` and TensorBoard (`tb/`).

  On a resume from step `resume_step`, rows of later steps (written by the killed run
  after its last checkpoint, and about to be redone) are dropped first, so the file
  holds each step once. Only process 0 writes (`enabled`); elsewhere `write` does nothing.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
    self.enabled, self.workdir, self.resume_step = enabled, workdir, resume_step
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None

  def _open(self):
    """At the first write, so a resume that fails before any step keeps the rows: drops the
    rows after the resumed step (and a torn last line), and opens TensorBoard purging them."""
    from tensorboardX import SummaryWriter
    if os.path.exists(self.path):
      with open(self.path) as f:
        rows = [line for line in f if line.strip()]
      kept = [line for line in rows if _row_step(line) <= self.resume_step]
      if len(kept) < len(rows):
        with open(self.path + ".tmp", "w") as f:
          f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)
    self.tb = SummaryWriter(os.path.join(self.workdir, "tb"), purge_step=self.resume_step + 1)

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    if self.tb is None:
      self._open()
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    for key, value in metrics.items():
      if isinstance(value, (int, float)):
        self.tb.add_scalar(key, value, step)
    self.tb.flush()


def _row_step(line: str) -> float:
  """A metrics row's step; infinity for a line a kill tore (dropped on resume)."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")


def _save(manager: CheckpointManager, step: int, learner: Learner, setup, stage: str,
          critic: Learner | None = None):
  items = {"params": learner.params, "train_state": {"opt_state": learner.opt_state}}
  if critic is not None:
    items["value_params"] = critic.params
    items["value_train_state"] = {"opt_state": critic.opt_state}
  # `replace`: after a resume from an older step, SFT's end may already have been saved.
  manager.replace(step, items, {"stage": stage, "model_config": setup.model_config.to_dict(),
                                "sft_steps": setup.config.sft.steps,
                                "algorithm": setup.config.rl.algorithm})


def make_critic(config: ConfigDict, policy: CausalLM, mesh: Mesh | None) -> Learner:
  """PPO's value model: the policy's trunk (a copy) with a zero-initialised scalar head."""
  critic = ValueModel(policy.config, dtype=compute_dtype(config), memory=memory_options(config),
                      rngs=nnx.Rngs(config.seed + 1))
  nnx.update(critic.model, jax.tree.map(jnp.copy, nnx.state(policy.model, nnx.Param)))
  return Learner(critic, make_optimizer(optimizer_config(config, "value")),
                 value_loss_fn(config.rl.value_clip), mesh=mesh)


def starting_policy(config: ConfigDict, decoder: DecoderConfig, mesh: Mesh | None) -> CausalLM:
  """The policy before any training: `config.model.init_from`'s weights (each device
  reads its own shards), else a random init seeded by `config.seed`. Float32
  parameters, `config.model.dtype` compute (orchestra/train/placement.py)."""
  if config.model.init_from:
    return load_hf(config.model.init_from, PARAM_DTYPE, compute_dtype=config.model.dtype,
                   mesh=mesh, memory=memory_options(config))
  return CausalLM(decoder, dtype=compute_dtype(config), memory=memory_options(config),
                  rngs=nnx.Rngs(config.seed))


def make_reference(setup, workdir: str, mesh: Mesh | None) -> Learner | None:
  """The KL reference: the policy RL starts from (the SFT result, or the starting policy
  when there is no SFT stage), frozen and placed like the policy; None when kl_coef is 0."""
  config = setup.config
  if not config.rl.loss.kl_coef:
    return None
  if config.sft.steps > 0:
    sft_dir = os.path.join(workdir, SFT_DIR)
    try:
      reference, _ = restore_policy(sft_dir, mesh=mesh, compute_dtype=compute_dtype(config),
                                    memory=memory_options(config))
    except StepNotRestored as e:     # not a step of the main folder: falling back cannot help
      raise CheckpointError(f"the KL reference (the SFT result in {sft_dir}) does not restore: "
                            f"{e}. Retrain SFT in a new --workdir, or set "
                            "config.rl.loss.kl_coef=0") from None
  else:
    reference = starting_policy(config, setup.model_config, mesh)
  return Learner(reference, optax.set_to_zero(), sft_loss_fn(), mesh=mesh)


def train(setup, workdir: str, progress: bool = True) -> dict:
  """Runs (or resumes) SFT then RL; returns the last RL step's metrics.

  Every rollout runs on one event loop, so clients bound to it (the engine's, an LLM
  user's or expert's HTTP connections) live for the whole run.
  """
  with asyncio.Runner() as runner:
    skipped: dict[int, str] = {}       # steps that did not restore -> why
    while True:
      try:
        return _train(setup, workdir, progress, runner, skipped)
      except StepNotRestored as e:
        skipped[e.step] = str(e)
        logging.warning("checkpoint step %d does not restore; trying the step before it. %s",
                        e.step, e)


def _sft_stage(setup, workdir: str, runner: asyncio.Runner, step: int, model, mesh,
               manager: CheckpointManager, writer: MetricsWriter, bar, *,
               restore_step: int | None, skipped: dict[int, str]):
  """SFT steps from `step` to `config.sft.steps` on the teacher's demonstrations (each
  epoch in a fresh seeded order), resuming from `restore_step` when given; checkpoints,
  and saves the SFT-only baseline to `workdir/SFT_DIR`. Returns the trained model."""
  config = setup.config
  sft_steps, batch_size = config.sft.steps, config.sft.batch_size
  data_parallel = data_parallel_size(mesh)
  learner = Learner(model, make_optimizer(optimizer_config(config, "sft")), sft_loss_fn(),
                    mesh=mesh)
  if restore_step is not None:
    _restore(manager, restore_step, learner, skipped=skipped)
  demos = broadcast_object(runner.run(teacher_demos(setup, config.sft.num_demos, config.seed))
                           if is_main() else None)
  rng = np.random.RandomState(config.seed)
  order = np.concatenate([rng.permutation(len(demos))
                          for _ in range(sft_steps * batch_size // len(demos) + 1)])
  while step < sft_steps:
    start = time.perf_counter()
    picked = order[step * batch_size:(step + 1) * batch_size]
    batches = pack_buckets([demos[i] for i in picked],
                           rows_multiple=math.lcm(SFT_ROWS_BUCKET, data_parallel),
                           long_rows_multiple=math.lcm(SFT_ROWS_BUCKET // 2, data_parallel))
    metrics = jax.device_get(learner.update(batches))
    step += 1
    writer.write(step, {"stage": "sft", "nll": float(metrics["nll"]),
                        "grad_norm": float(metrics["grad_norm"]),
                        "tokens_per_s": float(sum(b["attention_mask"].sum() for b in batches)
                                              / (time.perf_counter() - start))})
    bar(step, f"sft nll {float(metrics['nll']):.3f}")
    if step == sft_steps:              # the SFT-only baseline first, so a resume always has it
      with CheckpointManager(os.path.join(workdir, SFT_DIR), keep_last=1) as sft_manager:
        _save(sft_manager, step, learner, setup, "sft")
        sft_manager.wait()
    if step % config.checkpoint.every == 0 or step == sft_steps:
      _save(manager, step, learner, setup, "sft")
  manager.wait()
  return learner.model


def _train(setup, workdir: str, progress: bool, runner: asyncio.Runner,
           skipped: dict[int, str]) -> dict:
  config = setup.config
  sft_steps, rl_steps = config.sft.steps, config.rl.total_steps
  manager = CheckpointManager(workdir, keep_last=config.checkpoint.keep)
  mesh = run_mesh(config)
  data_parallel = data_parallel_size(mesh)   # every batch splits evenly over the mesh
  model = starting_policy(config, setup.model_config, mesh)
  step, stage = 0, "sft"
  latest = _resume_step(manager, skipped)
  if latest is not None:
    meta = _restoring(manager, latest, lambda: manager.restore_metadata(latest))
    step, stage = latest, meta["stage"]
    _check_resumable(config, manager, meta, workdir)
    logging.warning("resuming %s at step %d", stage, step)
  writer = MetricsWriter(workdir, resume_step=step, enabled=is_main())

  bar = _progress(progress and is_main(), sft_steps + rl_steps, step)
  if step < sft_steps:
    model = _sft_stage(setup, workdir, runner, step, model, mesh, manager, writer, bar,
                       restore_step=latest, skipped=skipped)
    step = sft_steps
    latest = None                      # RL starts with a fresh optimizer

  learner = Learner(model, make_optimizer(optimizer_config(config, "rl")),
                    policy_loss_fn(policy_loss_config(config)),
                    mesh=mesh, num_micro_batches=config.rl.micro_batches,
                    aggregation=config.rl.aggregation,
                    norm_constant=config.episode.max_total_tokens)
  if latest is not None and stage == "sft" and step == sft_steps:
    # SFT finished in an earlier run; RL starts with a fresh optimizer.
    _restore(manager, latest, learner, params_only=True, skipped=skipped)
  # PPO's critic starts from the SFT trunk; an RL checkpoint then overwrites it.
  critic = make_critic(config, learner.model, mesh) if config.rl.algorithm == "ppo" else None
  if latest is not None and stage == "rl":
    _restore(manager, latest, learner, critic, skipped=skipped)
  reference = make_reference(setup, workdir, mesh)
  metrics = {}
  if step < sft_steps + rl_steps:
    metrics = _rl_stage(setup, workdir, runner, step, learner, reference, critic,
                        data_parallel, manager, writer, bar)
  manager.wait()
  manager.close()
  return metrics


def _check_resumable(config: ConfigDict, manager: CheckpointManager, meta: dict,
                     workdir: str) -> None:
  """Refuses overrides that contradict the checkpoint resumed from: SFT steps cannot be
  taken back (a lowered `sft.steps` started RL from the untrained policy), RL steps are
  numbered after SFT's end, and a PPO checkpoint holds a critic that others lack (the
  mismatch used to set healthy checkpoints aside as unreadable)."""
  step, stage, sft_steps = meta["step"], meta["stage"], config.sft.steps
  if stage == "sft" and step > sft_steps:
    raise CheckpointError(f"config.sft.steps={sft_steps}, but {workdir} holds SFT at step {step}: "
                          f"relaunch with --config.sft.steps={step} or more")
  if stage != "rl":
    return
  sft_end = meta["sft_steps"] if "sft_steps" in meta else _sft_end(workdir)
  if sft_end is not None and sft_end != sft_steps:
    raise CheckpointError(f"config.sft.steps={sft_steps}, but {workdir}'s SFT ended at step "
                          f"{sft_end} and its RL steps are numbered after it: relaunch with "
                          f"--config.sft.steps={sft_end}")
  has_critic = os.path.isdir(os.path.join(manager.directory, str(step), "value_params"))
  if has_critic != (config.rl.algorithm == "ppo"):
    written = meta.get("algorithm", "ppo" if has_critic else "a critic-free algorithm")
    raise CheckpointError(f"config.rl.algorithm={config.rl.algorithm!r}, but {workdir}'s RL "
                          f"checkpoints were written by {written}: relaunch with its "
                          "algorithm, or start a new --workdir")


def _sft_end(workdir: str) -> int | None:
  """The step of the SFT-only baseline in `workdir/SFT_DIR` (where SFT ended), if any."""
  try:
    with CheckpointManager(os.path.join(workdir, SFT_DIR), read_only=True) as sft:
      return sft.latest_step()
  except CheckpointError:                       # no sft/ folder
    return None


def _rl_stage(setup, workdir: str, runner: asyncio.Runner, step: int, learner: Learner,
              reference: Learner | None, critic: Learner | None, data_parallel: int,
              manager: CheckpointManager, writer: MetricsWriter, bar) -> dict:
  """RL steps from `step` to the end: sample, update, sync, log, checkpoint. Returns the
  last step's metrics. With `rollout.max_staleness = 1` each step's episodes are sampled
  during the update before it (`update_while_sampling`), except a (resumed) run's first."""
  config = setup.config
  end = config.sft.steps + config.rl.total_steps
  # The rollout engine (in-process, or servers synced to this step's weights); process 0's
  # alone in a multi-process run.
  on_device = config.rollout.engine == "jax"           # else exported from host memory
  policy = rollout_policy(learner.model, on_device)
  rollouts = runner.run(open_rollouts(config, workdir, os.path.join(workdir, "tokenizer"),
                                      policy, step)) if is_main() else None
  ahead = None             # the next step's episodes, sampled during this step's update
  try:
    while step < end:
      start = time.perf_counter()
      if ahead is not None:
        episodes = ahead.result()                # raises what stopped their sampling
      else:
        episodes = runner.run(sample_step(setup, rollouts, step)) if is_main() else None
      episodes = broadcast_object(episodes)
      sample_next = config.rollout.max_staleness > 0 and step + 1 < end
      metrics, ahead = runner.run(update_while_sampling(
          setup, learner, rollouts if sample_next else None, episodes, step, reference, critic,
          data_parallel))
      step += 1
      policy = rollout_policy(learner.model, on_device)
      if rollouts is not None:                                 # the weight sync
        metrics.update(runner.run(rollouts.after_update(policy, step)))
      metrics["step_s"] = time.perf_counter() - start
      writer.write(step, {"stage": "rl", **metrics})
      bar(step, f"rl reward {metrics['reward']:.3f} acc {metrics['accuracy']:.2f}")
      if step % config.checkpoint.every == 0 or step == end:
        _save(manager, step, learner, setup, "rl", critic)
  finally:
    if rollouts is not None:
      runner.run(rollouts.aclose())
  return metrics


@dataclasses.dataclass
class StepEpisodes:
  """One RL step's episodes: `groups[i]` are task i's `group_size` rollouts under
  preference `prefs[i]`, sampled on the engine's weights `version` in `rollout_s`."""
  prefs: list[str]
  groups: list[list[Rollout]]
  version: int
  rollout_s: float


async def sample_step(setup, rollouts: Rollouts, step: int) -> StepEpisodes:
  """Step `step`'s episodes: `tasks_per_step` train tasks, each with a sampled preference
  and `group_size` episodes, all concurrent (up to `max_concurrent_episodes`). Which
  tasks, preferences and seeds is a function of `step` alone (resume-safe)."""
  config = setup.config
  rl, e = config.rl, config.episode
  rng = np.random.RandomState(config.seed * 100_003 + step)
  tasks = setup.tasks("train")
  picks = rng.choice(len(tasks), rl.tasks_per_step, replace=False)
  prefs = rng.choice(list(config.train_preferences), rl.tasks_per_step)
  seeds = rng.randint(0, 2**30, rl.tasks_per_step)
  sampling = SamplingParams(max_tokens=e.turn_tokens, temperature=e.temperature,
                            stop_token_ids=setup.model_config.stop_token_ids)
  sem = asyncio.Semaphore(rl.max_concurrent_episodes)

  async def episode(task, pref, seed, k):
    async with sem:
      return await setup.rollout(rollouts.episode_engine(), task, pref,
                                 dataclasses.replace(sampling, seed=seed + k))

  start, version = time.perf_counter(), rollouts.engine.weight_version
  groups = await asyncio.gather(*(
      asyncio.gather(*(episode(tasks[i], p, int(s) * rl.group_size, k)
                       for k in range(rl.group_size)))
      for i, p, s in zip(picks, prefs, seeds, strict=True)))
  return StepEpisodes([str(p) for p in prefs], groups, version, time.perf_counter() - start)


async def update_while_sampling(setup, learner: Learner, rollouts: Rollouts | None,
                                episodes: StepEpisodes, step: int,
                                reference: Learner | None = None, critic: Learner | None = None,
                                data_parallel: int = 1) -> tuple[dict, asyncio.Task | None]:
  """`learn_step` on `episodes`; given `rollouts`, the update runs in a worker thread while
  the engine samples step `step + 1`'s episodes on the weights it has now, one version
  behind the update (`rollout.max_staleness = 1`). Returns the metrics and that finished
  sampling task (None without `rollouts`); its `result()` raises whatever stopped it, so a
  failure there lands after this step's update is saved."""
  args = (setup, learner, episodes, step, reference, critic, data_parallel)
  if rollouts is None:
    return learn_step(*args), None
  ahead = asyncio.create_task(sample_step(setup, rollouts, step + 1))
  try:
    metrics = await asyncio.to_thread(learn_step, *args)
  except BaseException:
    ahead.cancel()
    await asyncio.gather(ahead, return_exceptions=True)
    raise
  await asyncio.wait([ahead])
  return metrics, ahead


def learn_step(setup, learner: Learner, episodes: StepEpisodes, step: int,
               reference: Learner | None = None, critic: Learner | None = None,
               data_parallel: int = 1) -> dict:
  """Grades `episodes`, computes advantages and updates the policy (and PPO's critic).
  Returns host-side metrics.

  Raises `RolloutsFailed` when every episode was lost (no rollout server answered).

  `reference` (a frozen policy) supplies `ref_logp` for the KL penalty when kl_coef > 0;
  `critic` (PPO only) supplies values for GAE and is updated on the returns.
  `data_parallel`: the ways the learner splits a batch's rows (`data_parallel_size`).
  In a multi-process run every process calls this with the same (broadcast) episodes.
  """
  kept, metrics = _grade_step(setup, episodes, step, with_critic=critic is not None)
  if kept[0]:
    metrics.update(_update_step(setup.config, learner, *kept, reference, critic, data_parallel))
  return metrics


def _grade_step(setup, episodes: StepEpisodes, step: int, with_critic: bool):
  """((kept trajectories, their advantages, their rewards), the step's episode metrics);
  GRPO/RLOO advantages per group, dropping homogeneous groups (zeros with a critic)."""
  rl = setup.config.rl
  trajs_kept, adv_kept, rewards_kept, rewards, correct_all, kept_groups = [], [], [], [], [], 0
  for p, group in zip(episodes.prefs, episodes.groups, strict=True):
    r, keep, correct = score_group(setup, setup.preference(p), group)
    a = np.zeros(len(r))
    if not with_critic:
      a, keep = group_estimates(r, keep, rl.algorithm, rl.std_threshold)
    rewards.extend(r)
    correct_all.extend(correct)
    kept_groups += int(keep.any())
    trajs_kept += [x.trajectory for x, k in zip(group, keep, strict=True) if k]
    adv_kept += [x for x, k in zip(a, keep, strict=True) if k]
    rewards_kept += [x for x, k in zip(r, keep, strict=True) if k]
  all_trajs = [r.trajectory for g in episodes.groups for r in g]
  if all(t.lost for t in all_trajs):
    raise RolloutsFailed(f"RL step {step + 1}: all {len(all_trajs)} episodes were lost "
                         f"({all_trajs[0].finish_reason}); no rollout engine answered. The "
                         "last checkpoint is intact: fix the servers and rerun to resume.")
  metrics = {
      "reward": float(np.mean(rewards)), "accuracy": float(np.mean(correct_all)),
      "cost_usd": float(np.mean([t.cost_usd for t in all_trajs])),
      "latency_s": float(np.mean([t.latency_s for t in all_trajs])),
      "format_ok": float(np.mean([t.format_ok for t in all_trajs])),
      "kept_groups": kept_groups, "rollout_s": episodes.rollout_s,
      "lost_episodes": int(sum(t.lost for t in all_trajs)),   # engine/user failures, dropped
      # the update's version minus the sampler's (1 when sampled during the last update)
      "policy_lag": step - episodes.version,
      # turns sampled on other weights than the step's sampler (0 unless a sync went wrong)
      "stale_turns": int(sum(v != episodes.version for t in all_trajs
                             for v in t.weight_versions)),
      "generated_tokens": int(sum(sum(t.loss_mask) for t in all_trajs)),
  }
  for name in setup.tool_names:
    metrics[f"calls/{name}"] = float(np.mean([t.tool_calls.get(name, 0) for t in all_trajs]))
  return (trajs_kept, adv_kept, rewards_kept), metrics


def _update_step(config: ConfigDict, learner: Learner, trajs: list[Trajectory], adv: list,
                 rewards: list, reference: Learner | None, critic: Learner | None,
                 data_parallel: int) -> dict:
  """Packs the kept episodes and runs the update(s); the update's metrics."""
  rl, e = config.rl, config.episode
  start = time.perf_counter()
  # Rows padded (all-zero masks: no effect on the loss) to a multiple of ROWS_BUCKET and of
  # the micro-batch count times the data-parallel size (each micro-batch splits evenly
  # over the mesh): the kept episodes vary step to step, and each new batch shape
  # would compile the update again (~10 s each on 2 CPU cores). GRPO's rows go in two
  # length buckets when that saves padding (`pack_buckets`); PPO's critic targets are
  # per row of one array.
  split = rl.micro_batches * data_parallel
  rows = math.lcm(ROWS_BUCKET, split)
  if critic is None:
    batches = pack_buckets(trajs, adv, rows_multiple=rows,
                           long_rows_multiple=math.lcm(ROWS_BUCKET // 2, split),
                           max_length=e.max_total_tokens)
  else:
    batches = [pack(trajs, adv, rows_multiple=rows, max_length=e.max_total_tokens)]
    ppo_targets(critic, batches[0], np.asarray(rewards, np.float32), rl)
    value_metrics = critic.update(batches[0])
  if reference is not None:
    for batch in batches:
      batch["ref_logp"] = reference.logprobs(batch["tokens"], batch["attention_mask"],
                                             e.temperature, loss_mask=batch["loss_mask"])
  update = jax.device_get(learner.update(batches))
  metrics = {"update_s": time.perf_counter() - start, "length_buckets": len(batches)}
  metrics["train_tokens_per_s"] = float(sum(b["attention_mask"].sum() for b in batches)
                                        / metrics["update_s"])
  metrics.update({k: float(v) for k, v in update.items()})
  if critic is not None:
    value_metrics = jax.device_get(value_metrics)
    metrics.update(value_loss=float(value_metrics["loss"]),
                   value_mean=float(value_metrics["value_mean"]))
  return metrics


def _resume_step(manager: CheckpointManager, skipped: dict[int, str]) -> int | None:
  """The newest step not yet found unrestorable; None for a fresh run.

  If every step failed to restore, nothing is resumed from scratch over them: the run
  stops with each step's reason.
  """
  steps = [s for s in manager.all_steps() if s not in skipped]
  if not steps and skipped:
    manager.close()
    reasons = "\n".join(f"  step {s}: {why}" for s, why in sorted(skipped.items()))
    raise CheckpointError(f"no checkpoint in {manager.directory} restores:\n{reasons}")
  return steps[-1] if steps else None


def _restoring(manager: CheckpointManager, step: int, restore):
  """Runs `restore()` of `step`; closes the manager if it fails (the caller falls back)."""
  try:
    return restore()
  except StepNotRestored:
    manager.close()
    raise


def _restore(manager: CheckpointManager, step: int, learner: Learner,
             critic: Learner | None = None, params_only: bool = False,
             skipped: dict[int, str] | None = None):
  """Restores `step` into the learner (and critic).

  Once it has, the newer `skipped` steps are known to be damaged (an older step
  restored into the same state): they are moved aside, kept, so saves can reuse their
  step numbers.
  """
  like = {"params": learner.params}
  if not params_only:
    like["train_state"] = {"opt_state": learner.opt_state}
  if critic is not None:
    like.update(value_params=critic.params, value_train_state={"opt_state": critic.opt_state})
  items, _ = _restoring(manager, step, lambda: manager.restore(like, step))
  learner.params = items["params"]
  if not params_only:
    learner.opt_state = items["train_state"]["opt_state"]
  if critic is not None:
    critic.params = items["value_params"]
    critic.opt_state = items["value_train_state"]["opt_state"]
  for damaged in sorted(s for s in skipped or {} if s > step):
    logging.warning("checkpoint step %d moved to %s", damaged, manager.set_aside(damaged))


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
