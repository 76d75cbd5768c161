"""Single-GPU variant of the paper setting: Qwen3-1.7B orchestrator, one vLLM server.

  CHECKPOINT_PATH=/ckpt/Qwen3-1.7B python launch/train.py --config configs/qwen3_1p7b_grpo.py --dry_run

Same schema as `qwen3_8b_grpo.py` (and `tiny_cpu.py`); only the sizes differ.
Step counts: `rl.total_steps` GRPO updates of `rl.tasks_per_step` x `rl.group_size` episodes.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "qwen3_8b_grpo", os.path.join(os.path.dirname(__file__), "qwen3_8b_grpo.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.get_config()
  c.model.update(dict(vocab_size=151_936, hidden_size=2048, intermediate_size=6144, num_layers=28,
                      num_heads=16, num_kv_heads=8, head_dim=128, tie_word_embeddings=True))
  c.mesh.num_devices = 1
  c.rollout.tensor_parallel_size = 1
  c.episode.max_turns = 30
  c.episode.turn_tokens = 4_096
  c.episode.max_total_tokens = 20_096
  c.rl.tasks_per_step = 8
  c.rl.micro_batches = 32
  return c
