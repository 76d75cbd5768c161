"""A tiny GRPO-style run that checkpoints every step and resumes from its workdir.

  python resume_run.py WORKDIR TOTAL_STEPS STOP_AT

Runs until step STOP_AT (then exits as if killed between steps) or
TOTAL_STEPS, resuming from the newest checkpoint in WORKDIR; at TOTAL_STEPS
writes the final parameters to WORKDIR/final.npz. Everything that changes
from step to step is checkpointed: params, Adam state, the RNG key and the
data-iterator position.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from orchestra.checkpoint import CheckpointManager  # noqa: E402
from orchestra.models import CausalLM, DecoderConfig  # noqa: E402
from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig,  # noqa: E402
                                 make_optimizer, policy_loss_fn)
from orchestra.sharding import make_mesh  # noqa: E402

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def batch_at(position: int, rng: jax.Array):
  """The data iterator: batch number `position`; advantages drawn from `rng`."""
  data = np.random.RandomState(1000 + position)
  tokens = jnp.asarray(data.randint(0, CFG.vocab_size, (8, 12)).astype(np.int32))
  mask = jnp.zeros((8, 12), bool).at[:, 4:].set(True)
  adv = jax.random.normal(rng, (8, 1)) * jnp.ones((1, 12))
  return {"tokens": tokens, "attention_mask": jnp.ones((8, 12), bool), "loss_mask": mask,
          "advantages": adv}


def main(workdir: str, total: int, stop_at: int):
  mesh = make_mesh((2, 2, 2))
  learner = Learner(CausalLM(CFG, rngs=nnx.Rngs(0)),
                    make_optimizer(OptimizerConfig(learning_rate=1e-2, schedule="cosine",
                                                   warmup_steps=2, total_steps=total)),
                    policy_loss_fn(PolicyLossConfig()), mesh=mesh, num_micro_batches=2)
  rng, step, position = jax.random.key_data(jax.random.key(7)), 0, 0
  manager = CheckpointManager(workdir, keep_last=2)
  if manager.latest_step() is not None:
    items, meta = manager.restore({"params": learner.params, "train_state":
                                   {"opt_state": learner.opt_state, "rng": rng}})
    learner.params = items["params"]
    learner.opt_state, rng = items["train_state"]["opt_state"], items["train_state"]["rng"]
    step, position = meta["step"], meta["data_position"]
  while step < min(stop_at, total):
    key, sub = jax.random.split(jax.random.wrap_key_data(rng))
    rng = jax.random.key_data(key)
    batch = batch_at(position, sub)
    logp = learner.logprobs(batch["tokens"], batch["attention_mask"])
    learner.update({**batch, "behaviour_logp": logp})
    step, position = step + 1, position + 1
    manager.save(step, {"params": learner.params,
                        "train_state": {"opt_state": learner.opt_state, "rng": rng}},
                 {"data_position": position, "config": {"total": total}})
  manager.wait()
  manager.close()
  if step == total:
    flat = {"/".join(map(str, p)): np.asarray(v[...])
            for p, v in nnx.to_flat_state(learner.params)}
    np.savez(os.path.join(workdir, "final.npz"), **flat)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
