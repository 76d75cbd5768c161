"""ToolOrchestra's paper setting: Qwen3-8B orchestrator, GRPO, vLLM rollouts, real tools.

  CHECKPOINT_PATH=/ckpt/Qwen3-8B INDEX_DIR=/data/wiki_index TRAIN_DATA=/data/train.jsonl \
  python launch/train.py --config configs/qwen3_8b_grpo.py --dry_run

Same schema as `tiny_cpu.py` (orchestra/train/resolve.py reads every field). What differs:
QA tasks from a file (`env.name = "qa"`), tools from the config (local search over an
index, Tavily web search, the code interpreter, LLM experts with prices), rollouts on
vLLM servers over HTTP (`rollout`), the policy initialised from a Hugging Face folder
(`model.init_from`), bfloat16 compute on a device mesh, and RL only (`sft.steps = 0`).
`--dry_run` plans it without GPUs: model size and per-device memory over the mesh, tools,
rollout server command, and what a real launch still needs.

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
# Tools in preference-vector order: the real tools, then the experts.
TOOLS = ("local_search", "web_search", "code_interpreter") + tuple(e[0] for e in EXPERTS)


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.env = ConfigDict(dict(
      name="qa",                               # question answering from a file
      benchmark="jsonl",                       # hle | frames | gsm8k | jsonl (orchestra.envs.qa)
      data=os.environ.get("TRAIN_DATA", ""),   # the training questions
      test_data=os.environ.get("TEST_DATA", ""),   # held-out questions (eval.split "test")
  ))
  c.tools = ConfigDict(dict(
      names=TOOLS,
      index_dir=os.environ.get("INDEX_DIR", ""),   # FAISS index from launch/build_index.py
      search_top_k=5,                          # passages per local_search call
      code_timeout_s=60.0,                     # code_interpreter wall-clock limit
      llm=ConfigDict({n: dict(model=m, price_in_per_1m=pi, price_out_per_1m=po, description=d,
                              base_url=f"https://api.example.invalid/{n}/v1",
                              api_key_env="EXPERT_API_KEY")
                      for n, m, pi, po, d in EXPERTS}),
  ))
  c.model = ConfigDict(dict(                   # Qwen3-8B; must match init_from's config.json
      init_from=os.environ.get("CHECKPOINT_PATH", ""),   # HF folder of the starting policy
      vocab_size=151_936, hidden_size=4096, intermediate_size=12_288, num_layers=36,
      num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
      tie_word_embeddings=False, dtype="bfloat16",
      remat="full", attention="blockwise", logits_chunk=1024))   # models.MemoryOptions
  c.mesh = ConfigDict(dict(
      shape=(1, -1, 1),                        # (data, fsdp, tensor); -1 = all remaining devices
      num_devices=16,                          # devices the mesh spans (0: all JAX sees)
  ))
  c.rollout = ConfigDict(dict(
      engine="http",                           # rollouts on servers (in-process: "jax")
      server="vllm",                           # what serves them (launch/vllm_server.py)
      launch=0,                                # servers this run starts (0: use `urls`)
      urls=("http://127.0.0.1:8000",),         # rollout servers someone else started
      served_model_name="policy",
      tensor_parallel_size=2,
      weight_sync="disk",                      # export to sync_dir, servers reload it
      sync_dir="/dev/shm/orchestra_sync",
      # 1: the servers sample the next step's episodes during this step's update, on weights
      # one update old (needs engine="http" and rl.loss.tis_cap); 0: strictly on-policy
      max_staleness=0,
  ))
  c.episode = ConfigDict(dict(
      max_turns=50, turn_tokens=8_768, max_total_tokens=32_768, temperature=1.0,
      max_observation_tokens=4_096, policy_price_in_per_1m=0.2, policy_price_out_per_1m=0.2,
      policy_latency_per_token_s=placeholder(float)))   # None: measured wall clock
  c.sft = ConfigDict(dict(steps=0))            # RL straight from the instruct checkpoint
  c.rl = ConfigDict(dict(
      algorithm="grpo", total_steps=300, tasks_per_step=16, group_size=8,
      learning_rate=1e-6, warmup_steps=0, std_threshold=0.1, invalid_format="drop",
      micro_batches=16, aggregation="token_mean", max_concurrent_episodes=128,
      loss=ConfigDict(dict(                    # orchestra.rl.update.PolicyLossConfig
          clip_low=0.2, clip_high=0.28, dual_clip=10.0, tis_cap=placeholder(float),
          kl_coef=1e-4, kl_estimator="mse", entropy_coef=0.0))))
  n = len(TOOLS)                               # one weight per tool, then outcome, cost, latency
  c.preferences = ConfigDict(dict(
      balanced=(0.0,) * n + (1.0, 0.5, 0.5),
      low_cost=(0.0,) * n + (1.0, 2.0, 0.0),
      high_accuracy=(0.0,) * n + (1.0, 0.0, 0.0)))
  c.train_preferences = ("balanced", "low_cost", "high_accuracy")
  c.checkpoint = ConfigDict(dict(every=10, keep=3))
  c.eval = ConfigDict(dict(split="test", num_tasks=500, policies=("rl",),
                           preferences=("balanced", "low_cost", "high_accuracy"),
                           temperature=0.0))
  return c
