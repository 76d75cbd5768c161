"""Where the RL loop's rollouts run, and how the servers get the learner's new weights.

`open_rollouts(config, ...)` gives a `Rollouts` for `config.rollout.engine`:

  "jax"   the in-process `JaxEngine` on the learner's parameters; a sync swaps the
          model in (`orchestra.engines.weight_sync.InProcessSync`).
  "http"  an `HTTPEngine` over rollout servers: `rollout.urls` (servers someone else
          started, e.g. vLLM on GPU nodes) or `rollout.launch = N` servers this run starts
          (`orchestra.engines.server_pool`: `launch/serve.py`, or `vllm serve` when
          `rollout.server = "vllm"`). A sync (`DiskSync`) exports the policy to
          `rollout.sync_dir/step_<version>` and has every server reload it.

In a multi-process run (orchestra/sharding/multihost.py) only process 0 has a `Rollouts`:
the engine samples from `rollout_policy(...)`, a local copy of the sharded policy
gathered from every process after each update, and the episodes reach the other
processes as Python objects (`broadcast_object`), so tools, experts and servers are
paid for, and servers synced, once per step.

Each episode's turns go to one server (`HTTPEngine.session`); a server that fails is
routed around for the rest of the step, and a launched one is restarted on the newest
weights before the next step. Servers are synced to the starting weights (the
checkpoint's, on resume) before the first rollout. The weight sync is one small
interface (`orchestra.engines.weight_sync`), so another transport (vLLM's NCCL weight
transfer) can sit beside `DiskSync` without touching the loop.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

from orchestra.engines import JaxEngine
from orchestra.engines.http_engine import HTTPEngine
from orchestra.engines.server_pool import LocalServers, ServerSpec
from orchestra.engines.weight_sync import DiskSync, InProcessSync, WeightSync, export_policy
from orchestra.models import CausalLM
from orchestra.sharding.multihost import is_main, to_host


class RolloutsFailed(RuntimeError):
  """No episode of a step could be rolled out (every server down); the run stops."""


class Rollouts:
  """The loop's rollout engine, its weight sync and (when launched here) its servers."""

  def __init__(self, engine, sync: WeightSync, servers: LocalServers | None = None):
    self.engine, self.sync, self.servers = engine, sync, servers

  def episode_engine(self):
    """The engine one episode uses (pinned to one server over HTTP)."""
    return self.engine.session() if isinstance(self.engine, HTTPEngine) else self.engine

  async def after_update(self, policy: CausalLM, version: int) -> dict[str, float]:
    """Brings back dead launched servers (on the newest export), then syncs `policy` as
    `version` (`policy`: `rollout_policy` of the learner's model)."""
    metrics = {}
    if self.servers is not None:
      moved = self.servers.revive(self.sync.newest())
      if moved:
        self.engine.set_servers(self.servers.urls)
      metrics["servers_restarted"] = len(moved)
    if isinstance(self.engine, HTTPEngine):
      metrics["failovers"] = self.engine.failovers          # requests moved this step
      self.engine.failovers = 0
      self.engine.down.clear()                   # a server back up is tried again
    return {**metrics, **await self.sync.push(policy, version)}

  async def aclose(self) -> None:
    if isinstance(self.engine, HTTPEngine):
      await self.engine.aclose()
    if self.servers is not None:
      self.servers.stop()


def rollout_policy(model: CausalLM, on_device: bool = True) -> CausalLM | None:
  """The policy as the rollout engine takes it: `model` itself in a one-process run.

  In a multi-process run, every process calls this together after each update: the
  sharded parameters are gathered one array at a time (a process other than 0 never holds
  more than one whole array), and process 0 keeps them: on its first local device for the
  in-process engine (`on_device`), in host memory for an export to rollout servers (a
  whole float32 Qwen3-8B is 33 GB, which has no room beside the learner's shards on one
  accelerator). The other processes, which roll nothing out, get None.
  """
  if jax.process_count() == 1:
    return model
  graphdef, state = nnx.split(model)
  arrays, treedef = jax.tree.flatten(state)
  kept = []
  for array in arrays:
    whole = to_host(array)
    kept.append((jnp.asarray(whole) if on_device else whole) if is_main() else None)
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, kept)) if is_main() else None


async def open_rollouts(config: ConfigDict, workdir: str, tokenizer_dir: str, policy: CausalLM,
                        version: int) -> Rollouts:
  """The `Rollouts` of `config.rollout`, synced to `policy` (`rollout_policy` of the
  learner's model) as `version`. The caller closes it (`aclose`), which also stops
  servers this run launched."""
  if config.rollout.engine == "jax":
    engine = JaxEngine(policy, weight_version=version)
    return Rollouts(engine, InProcessSync(engine))
  return await _server_rollouts(config, workdir, tokenizer_dir, policy, version)


async def _server_rollouts(config: ConfigDict, workdir: str, tokenizer_dir: str,
                           model: CausalLM, version: int) -> Rollouts:
  r = config.rollout
  sync_dir = r.sync_dir or os.path.join(workdir, "weight_sync")
  os.makedirs(sync_dir, exist_ok=True)
  path = export_policy(model, sync_dir, version, tokenizer_dir, config.model.dtype)
  servers = None
  if r.launch:
    spec = ServerSpec(r.server, r.served_model_name, os.path.join(workdir, "servers"),
                      tensor_parallel_size=r.tensor_parallel_size,
                      max_model_len=config.episode.max_total_tokens)
    servers = LocalServers(spec, r.launch)
  try:
    engine = HTTPEngine(servers.start(path) if servers else list(r.urls), r.served_model_name)
  except BaseException:
    if servers is not None:
      servers.stop()
    raise
  rollouts = Rollouts(engine, DiskSync(engine, sync_dir, tokenizer_dir, config.model.dtype),
                      servers)
  try:
    await engine.update_weights(path, version)    # every server serves `version` from here on
  except BaseException:
    await rollouts.aclose()
    raise
  return rollouts
