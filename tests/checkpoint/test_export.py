"""launch/export_hf.py: a training checkpoint -> a folder transformers loads, same logits."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward
from flax import nnx

from orchestra.checkpoint import CheckpointManager
from orchestra.checkpoint.export import restore_policy
from orchestra.models import CausalLM, DecoderConfig
from orchestra.rl.update import Learner, OptimizerConfig, make_optimizer, policy_loss_fn, PolicyLossConfig
from orchestra.sharding import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A run trained one step on a (1, 8, 1) mesh and checkpointed at step 1."""
  workdir = tmp_path_factory.mktemp("run")
  learner = Learner(CausalLM(CFG, rngs=nnx.Rngs(0)),
                    make_optimizer(OptimizerConfig(learning_rate=1e-2)),
                    policy_loss_fn(PolicyLossConfig()), mesh=make_mesh((1, 8, 1)))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 64, (8, 10)).astype(np.int32))
  batch = {"tokens": tokens, "attention_mask": jnp.ones((8, 10), bool),
           "loss_mask": jnp.ones((8, 10), bool), "advantages": jnp.ones((8, 10))}
  batch["behaviour_logp"] = learner.logprobs(tokens, batch["attention_mask"])
  learner.update(batch)
  with CheckpointManager(workdir) as manager:
    manager.save(1, {"params": learner.params}, {"model_config": CFG.to_dict()})
    manager.wait()
  return workdir, learner.model, tokens


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_script_output_matches_flax_logits(trained_run, tmp_path, dtype):
  import torch
  import transformers
  workdir, model, tokens = trained_run
  out = tmp_path / "hf"
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export_hf.py"),
                         f"--workdir={workdir}", f"--out={out}", f"--dtype={dtype}"],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"exported step 1 ({dtype})" in proc.stdout
  hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  with torch.no_grad():
    ref = hf(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
  ours = np.asarray(forward(model, tokens))
  tol = 1e-4 if dtype == "float32" else 2e-2
  np.testing.assert_allclose(ref, ours, atol=tol, rtol=0)


def test_restore_policy_errors(tmp_path):
  from orchestra.checkpoint import CheckpointError
  with pytest.raises(CheckpointError, match="no complete checkpoint"):
    restore_policy(tmp_path / "empty")
  with CheckpointManager(tmp_path / "foreign") as manager:
    manager.save(3, {"params": {"w": jnp.ones(2)}}, {})
    manager.wait()
  with pytest.raises(CheckpointError, match="model_config"):
    restore_policy(tmp_path / "foreign")


@pytest.mark.slow
def test_export_script_reports_a_missing_run_clearly(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export_hf.py"),
                         f"--workdir={tmp_path}"], capture_output=True, text=True, env=env,
                        timeout=120)
  assert proc.returncode != 0
  assert "no complete checkpoint" in proc.stderr and "Traceback" not in proc.stderr
