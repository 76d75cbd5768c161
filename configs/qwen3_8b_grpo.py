"""ToolOrchestra's paper setting: Qwen3-8B orchestrator, GRPO, vLLM rollouts, real tools.

  CHECKPOINT_PATH=/ckpt/Qwen3-8B INDEX_DIR=/data/wiki_index \
  python launch/train.py --config configs/qwen3_8b_grpo.py --dry_run

Step counts: `rl.total_steps` (GRPO updates of `rl.tasks_per_step` x `rl.group_size`
episodes). Values follow DESIGN section 2 / the paper (arXiv 2511.21689).
"""

import os

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

# Expert pool and prices (USD per 1M tokens in/out) from shared/notes/toolorchestra-reference.md.
EXPERTS = (
    ("search-1", "gpt-5", 1.25, 10.0, "Strongest search query writer; slow and expensive."),
    ("reasoner-1", "gpt-5-mini", 0.25, 2.0, "Strong, cheaper reasoning and code writing."),
    ("reasoner-2", "Qwen2.5-Coder-32B-Instruct", 0.8, 0.8, "Open code model; fast."),
    ("answer-1", "Qwen3-32B", 0.8, 0.8, "Open generalist for final answers."),
    ("answer-math-1", "Qwen2.5-Math-72B-Instruct", 0.9, 0.9, "Math specialist."),
)


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.backend = "vllm"                           # rollouts on external vLLM servers (GPU)
  c.seed = 0
  c.checkpoint_path = os.environ.get("CHECKPOINT_PATH", "")   # HF folder of the initial policy
  c.model = ConfigDict(dict(                   # Qwen3-8B shape (used when no checkpoint is given)
      vocab_size=151_936, hidden_size=4096, intermediate_size=12_288, num_layers=36,
      num_heads=32, num_kv_heads=8, head_dim=128, tie_word_embeddings=False,
      rope_theta=1_000_000.0, dtype="bfloat16", remat=True))
  c.mesh = (1, -1, 1)                          # (data, fsdp, tensor); -1 = all devices
  c.num_devices = 16                           # devices the dry run plans the sharding for
  c.vllm = ConfigDict(dict(
      urls=("http://127.0.0.1:8000",),         # rollout servers (launch/vllm_server.py)
      model="policy",                          # served model name
      tensor_parallel_size=2,
      weight_sync_dir="/dev/shm/orchestra_sync",   # exported HF folder the servers reload
  ))
  c.tools = ConfigDict(dict(
      index_dir=os.environ.get("INDEX_DIR", ""),   # FAISS index from launch/build_index.py
      web_search=True,                         # Tavily (TAVILY_API_KEY)
      code_timeout_s=60.0,
      experts=[dict(name=n, model=m, price_in_per_1m=pi, price_out_per_1m=po, description=d,
                    base_url=f"https://api.example.invalid/{n}/v1", api_key_env="EXPERT_API_KEY")
               for n, m, pi, po, d in EXPERTS],
  ))
  c.episode = ConfigDict(dict(
      max_turns=50, max_prompt_tokens=24_000, max_response_tokens=8_768, temperature=1.0,
      policy_price_in_per_1m=0.2, policy_price_out_per_1m=0.2))
  c.rl = ConfigDict(dict(
      algorithm="grpo", total_steps=300, tasks_per_step=16, group_size=8,
      learning_rate=1e-6, std_threshold=0.1, invalid_format="drop", micro_batches=16,
      aggregation="token_mean",
      loss=ConfigDict(dict(                    # orchestra.rl.update.PolicyLossConfig
          clip_low=0.2, clip_high=0.28, dual_clip=10.0, tis_cap=placeholder(float),
          kl_coef=1e-4, kl_estimator="mse", entropy_coef=0.0))))
  c.preferences = ConfigDict(dict(              # tools: one weight per expert + search + code
      balanced=(0.0,) * (len(EXPERTS) + 2) + (1.0, 0.5, 0.5),
      low_cost=(0.0,) * (len(EXPERTS) + 2) + (1.0, 2.0, 0.0),
      high_accuracy=(0.0,) * (len(EXPERTS) + 2) + (1.0, 0.0, 0.0)))
  return c
