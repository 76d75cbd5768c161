"""RL rollouts on rollout servers the run launches (launch/serve.py, real processes):
exact weight sync, a server SIGKILLed mid-step, no orphans, and the loop end to end."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward
from flax import nnx
from ml_collections import ConfigDict
from tokenizer_fixture import tokenizer_dir  # noqa: F401 (a fixture)

from orchestra.engines import SamplingParams
from orchestra.engines.server_pool import LocalServers, ServerSpec
from orchestra.models import CausalLM, DecoderConfig
from orchestra.rl.losses import token_logprobs
from orchestra.rl.update import Learner, OptimizerConfig, make_optimizer, sft_loss_fn
from orchestra.train.rollouts import open_rollouts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = [5, 17, 42, 8, 99, 3]


def learner_for(tokenizer_dir):
  from transformers import AutoTokenizer
  tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
  return Learner(CausalLM(cfg, rngs=nnx.Rngs(0)),
                 make_optimizer(OptimizerConfig(learning_rate=1e-3)), sft_loss_fn())


def rollout_config(launch=2):
  return ConfigDict(dict(
      rollout=dict(engine="http", server="orchestra", launch=launch, urls=(),
                   served_model_name="policy", tensor_parallel_size=1, weight_sync="disk",
                   sync_dir=""),
      episode=dict(max_total_tokens=256), model=dict(dtype="float32")))


def perturb(learner, seed):
  """New weights, as an update would give (a visible change to every parameter)."""
  key = jax.random.key(seed)
  learner.params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(key, x.shape, x.dtype),
                                learner.params)


def learner_logprobs(learner, prompt, completion):
  tokens = jnp.asarray([prompt + completion], jnp.int32)
  logits = forward(learner.model, tokens, jnp.ones_like(tokens, bool))
  return np.asarray(token_logprobs(logits, tokens))[0, len(prompt):]


@pytest.mark.slow
def test_after_each_sync_the_servers_score_tokens_exactly_as_the_learner(tmp_path, tokenizer_dir):
  learner = learner_for(tokenizer_dir)
  sampling = SamplingParams(max_tokens=8, temperature=1.0, seed=3)

  async def main():
    rollouts = await open_rollouts(rollout_config(), str(tmp_path), tokenizer_dir, learner.model, 0)
    try:
      seen = []
      for version in (1, 2):
        perturb(learner, version)
        metrics = await rollouts.after_update(learner.model, version)
        for url in rollouts.engine.base_urls:
          _, c = await rollouts.engine.generate_on(url, PROMPT, sampling)
          seen.append((version, metrics, c))
      return seen, sorted(os.listdir(tmp_path / "weight_sync"))
    finally:
      await rollouts.aclose()

  seen, exports = asyncio.run(main())
  for version, metrics, c in seen:
    assert c.weight_version == version == metrics["weight_version"]
    assert metrics["sync_s"] > 0 and metrics["servers_restarted"] == 0
    if version == 2:          # the learner now holds version 2's weights
      np.testing.assert_allclose(c.logprobs, learner_logprobs(learner, PROMPT, c.token_ids),
                                 atol=1e-5)
  assert exports == ["step_1", "step_2"]                  # the newest two kept


@pytest.mark.slow
def test_a_server_killed_mid_step_is_routed_around_then_restarted(tmp_path, tokenizer_dir):
  learner = learner_for(tokenizer_dir)
  sampling = SamplingParams(max_tokens=24, temperature=1.0)

  async def main():
    rollouts = await open_rollouts(rollout_config(), str(tmp_path), tokenizer_dir, learner.model, 0)
    try:
      victim = rollouts.servers.servers[0]

      async def episode(k):
        engine = rollouts.episode_engine()
        turns = []
        for _ in range(3):
          turns.append(await engine.generate(PROMPT + [k], sampling))
        return turns

      episodes = [asyncio.create_task(episode(k)) for k in range(8)]
      await asyncio.sleep(0.5)
      os.kill(victim.proc.pid, signal.SIGKILL)               # mid-step, without warning
      done = await asyncio.gather(*episodes)
      failovers = rollouts.engine.failovers
      perturb(learner, 1)
      metrics = await rollouts.after_update(learner.model, 1)
      after = [await rollouts.engine.generate_on(url, PROMPT, sampling)
               for url in rollouts.engine.base_urls]
      return done, failovers, metrics, after, victim.alive()
    finally:
      await rollouts.aclose()

  done, failovers, metrics, after, victim_alive = asyncio.run(main())
  assert all(len(turns) == 3 for turns in done)             # no episode lost
  assert failovers >= 1 and metrics["servers_restarted"] == 1 and victim_alive
  assert {c.weight_version for _, c in after} == {1} and len(after) == 2


def test_servers_are_stopped_on_every_exit_path(tmp_path, tokenizer_dir):
  """An exception inside the context, and the stop itself, leave no process behind."""
  learner = learner_for(tokenizer_dir)
  from orchestra.engines.weight_sync import export_policy
  path = export_policy(learner.model, str(tmp_path / "sync"), 0, tokenizer_dir, "float32")
  spec = ServerSpec("orchestra", "policy", str(tmp_path / "logs"), max_model_len=256)
  with pytest.raises(RuntimeError, match="boom"):
    with LocalServers(spec, 1) as servers:
      servers.start(path)
      pid = servers.servers[0].proc.pid
      raise RuntimeError("boom")
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)


@pytest.mark.slow
def test_training_on_launched_servers_end_to_end_and_resume(tmp_path):
  """launch/train.py with rollout.engine=http: every RL turn carries its step's version,
  each step syncs, no server outlives the run; a rerun with more steps resumes and the
  servers serve the checkpoint's weights first. The rerun samples one step ahead
  (`rollout.max_staleness=1`): its first step on the checkpoint's weights, its second
  during the first's update, on the weights before it."""
  workdir = tmp_path / "run"
  args = [sys.executable, os.path.join(ROOT, "launch", "train.py"),
          f"--config={os.path.join(ROOT, 'configs', 'tiny_cpu.py')}", f"--workdir={workdir}",
          "--config.sft.steps=2", "--config.sft.num_demos=16", "--config.rl.tasks_per_step=2",
          "--config.rl.group_size=2", "--config.checkpoint.every=1", "--config.model.num_layers=1",
          # one server per run: syncing and routing over two are tested above
          "--config.rollout.engine=http", "--config.rollout.launch=1", "--noprogress"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  ahead = ["--config.rollout.max_staleness=1", "--config.rl.loss.tis_cap=2.0"]
  for steps, more in ((1, []), (3, ahead)):
    out = subprocess.run(args + [f"--config.rl.total_steps={steps}"] + more, capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  rl = [r for r in rows if r.get("stage") == "rl"]
  assert [r["step"] for r in rl] == [3, 4, 5]
  assert [r["weight_version"] for r in rl] == [3, 4, 5]      # synced after each update
  assert [r["policy_lag"] for r in rl] == [0, 0, 1]          # the last sampled one step ahead
  # every turn on the weights its step sampled with (5's episodes: version 3's)
  assert all(r["stale_turns"] == 0 and r["lost_episodes"] == 0 for r in rl)
  listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
  assert str(workdir) not in listed                           # no server outlived its run


class NoServerSetup:
  """A setup whose every episode is lost to the engine (no server answered)."""

  tool_names = ("expert",)
  model_config = SimpleNamespace(stop_token_ids=())       # the model's own stop ids: none

  def __init__(self):
    self.config = ConfigDict(dict(
        seed=0, train_preferences=("balanced",),
        rl=dict(tasks_per_step=2, group_size=2, max_concurrent_episodes=4, algorithm="grpo",
                std_threshold=0.05, invalid_format="zero"),
        episode=dict(turn_tokens=8, temperature=1.0)))

  def tasks(self, split):
    return ["task-a", "task-b", "task-c"]

  def preference(self, name):
    return np.array([0.0, 1.0, 0.5, 0.5])

  async def rollout(self, engine, task, preference_name, sampling):
    from orchestra.agent.episode import Trajectory
    from orchestra.train.setup_base import Rollout
    return Rollout(Trajectory.from_prompt([1, 2, 3], finish_reason="engine_error"), False)


def test_a_step_whose_every_episode_is_lost_stops_the_run_with_one_message():
  from orchestra.train.loop import learn_step, sample_step
  from orchestra.train.rollouts import Rollouts, RolloutsFailed

  rollouts = Rollouts(engine=SimpleNamespace(weight_version=7), sync=None)
  episodes = asyncio.run(sample_step(NoServerSetup(), rollouts, step=7))
  assert episodes.version == 7 and [len(g) for g in episodes.groups] == [2, 2]
  with pytest.raises(RolloutsFailed, match="all 4 episodes were lost .engine_error.; no rollout "
                                            "engine answered. The last checkpoint is intact"):
    learn_step(NoServerSetup(), learner=None, episodes=episodes, step=7)


class FlakySetup(NoServerSetup):
  """Episodes that fail once the engine's servers are gone."""

  async def rollout(self, engine, task, preference_name, sampling):
    if engine.gone:
      raise ConnectionError("every server is gone")
    return await super().rollout(engine, task, preference_name, sampling)


def test_sampling_ahead_runs_during_the_update_and_its_failure_lands_after_it(monkeypatch):
  import threading

  from orchestra.train import loop
  from orchestra.train.rollouts import Rollouts

  updates = []

  def fake_learn_step(setup, learner, episodes, step, *args):
    updates.append((step, episodes.version, threading.current_thread() is threading.main_thread()))
    return {"step": step}

  monkeypatch.setattr(loop, "learn_step", fake_learn_step)
  rollouts = Rollouts(engine=SimpleNamespace(gone=False, weight_version=7), sync=None)
  episodes = asyncio.run(loop.sample_step(FlakySetup(), rollouts, 7))

  def step_7():
    return asyncio.run(loop.update_while_sampling(FlakySetup(), None, rollouts, episodes, 7))

  metrics, ahead = step_7()
  assert metrics == {"step": 7} and updates == [(7, 7, False)]   # in a worker thread
  assert ahead.done() and ahead.result().version == 7            # step 8 on version 7's weights
  rollouts.engine.gone = True
  metrics, ahead = step_7()
  assert metrics == {"step": 7}                                  # the update still completed
  with pytest.raises(ConnectionError, match="every server is gone"):
    ahead.result()                                               # raised at the next step


def test_a_paused_server_with_a_request_waiting_still_stops_on_sigterm(tmp_path, tokenizer_dir):
  """SIGTERM is what a dying trainer's servers get (PR_SET_PDEATHSIG): a request held at a
  `keep` pause used to keep the server up for good."""
  import httpx
  learner = learner_for(tokenizer_dir)
  from orchestra.engines.weight_sync import export_policy
  path = export_policy(learner.model, str(tmp_path / "sync"), 0, tokenizer_dir, "float32")
  spec = ServerSpec("orchestra", "policy", str(tmp_path / "logs"), max_model_len=256)
  with LocalServers(spec, 1) as servers:
    url = servers.start(path)[0]
    proc = servers.servers[0].proc
    assert httpx.post(url + "/pause?mode=keep").status_code == 200
    waiting = subprocess.Popen([sys.executable, "-c", (
        "import httpx, sys; httpx.post(sys.argv[1] + '/v1/completions', timeout=120, "
        "json={'model': 'policy', 'prompt': [5, 6], 'max_tokens': 2})"), url])
    try:
      time.sleep(1.0)                                    # the request waits at the pause
      proc.send_signal(signal.SIGTERM)
      proc.wait(30)                                      # the grace is 5 s
    finally:
      waiting.kill()
      waiting.wait()
