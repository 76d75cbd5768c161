"""The offline default: a ~1M-parameter orchestrator on toolscale-mini, on 2 CPU cores.

  python launch/train.py --config configs/tiny_cpu.py --workdir runs/tiny

Step counts: `sft.steps` (warm start on teacher demonstrations) and
`rl.total_steps` (GRPO updates); each RL step runs `rl.tasks_per_step` tasks x
`rl.group_size` episodes. Override any field, e.g. `--config.rl.total_steps=3`.
"""

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

# Order of every preference vector: one weight per tool (TOOLS order), then outcome, cost, latency.
TOOLS = ("code_interpreter", "local_search", "expert-small", "expert-large", "expert-batch")


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0                                   # model init, sampling, task order
  c.env = ConfigDict(dict(
      name="toolscale_mini",                   # the procedural offline environment
      seed=0,                                  # knowledge base and tasks
      n_entities=48,                           # fictional entities in the knowledge base
      n_tasks=900,                             # tasks over all splits
  ))
  c.tools = ConfigDict(dict(
      names=TOOLS,                             # tools offered (plus `answer`), in preference order
      code_timeout_s=5.0,                      # code_interpreter wall-clock limit
      search_top_k=1,                          # passages per local_search call
      # What the model reads about each tool (short: the prompt budget is small). Prices are
      # USD per 1M tokens in/out, as in the paper's tool descriptions.
      descriptions=ConfigDict(dict(
          code_interpreter="Run Python; returns what it prints. Nearly free, ~0.1 s.",
          local_search="Look up a place by name; returns its facts. Nearly free, fast.",
          answer="Give the final answer.",
          **{"expert-small": "Small math model answers for you: $0.1/$0.4, 1 s. Weak on facts.",
             "expert-large": "Large model answers for you: $10/$30, 6 s. Accurate.",
             "expert-batch": "Large model via batch queue: $2/$6, 60 s. Accurate."})),
  ))
  c.model = ConfigDict(dict(
      vocab_size=1024,                         # BPE trained on the environment's own text
      hidden_size=128,                         # D
      intermediate_size=384,                   # F
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      rope_theta=10_000.0,
      tie_word_embeddings=False,
      dtype="float32",                         # parameters and activations
      # Memory options of the training step (orchestra.models.MemoryOptions; results unchanged):
      remat="none",                            # "none" | "full" | "dots": recompute in backward
      attention="dense",                       # "dense" | "blockwise": memory linear in T
                                               # | "fused": cuDNN flash attention on GPUs
      logits_chunk=1024,                       # positions per chunk of LM-head logits
      init_from="",                            # "": random init over the run's own tokenizer
  ))
  c.mesh = ConfigDict(dict(
      shape=(1, 1, 1),                         # (data, fsdp, tensor); -1 = all remaining devices
      num_devices=1,                           # devices the mesh spans (0: all JAX sees)
  ))
  c.rollout = ConfigDict(dict(
      engine="jax",                            # "jax": in-process sampler; "http": servers
      # With engine="http" (orchestra/train/rollouts.py):
      server="orchestra",                      # launch/serve.py ("vllm": vllm serve, GPU)
      launch=2,                                # servers this run starts (0: use `urls`)
      urls=(),                                 # servers someone else started
      served_model_name="policy",
      tensor_parallel_size=1,                  # vLLM only
      weight_sync="disk",                      # export to sync_dir/step_N, servers reload it
      sync_dir="",                             # "": WORKDIR/weight_sync
      # 1: the servers sample the next step's episodes during this step's update, on weights
      # one update old (needs engine="http" and rl.loss.tis_cap); 0: strictly on-policy
      max_staleness=0,
  ))
  c.episode = ConfigDict(dict(
      max_turns=4,                             # policy turns per episode
      turn_tokens=64,                          # max tokens per policy turn
      max_total_tokens=512,                    # prompt + turns + observations
      temperature=1.0,                         # rollout sampling temperature
      max_observation_tokens=96,               # longer tool outputs are cut
      policy_price_in_per_1m=0.2,              # the orchestrator's own tokens (Qwen3-8B rate)
      policy_price_out_per_1m=0.2,
      policy_latency_per_token_s=0.02,         # declared (~50 tokens/s), not this CPU's wall clock
  ))
  c.sft = ConfigDict(dict(
      steps=300,                               # optimizer steps on teacher demonstrations
      batch_size=16,                           # demonstrations per step
      num_demos=2000,                          # demonstration pool (train split)
      # the share of demos where an expert answers (the rest run the real-tool plan)
      expert_demo_fraction=0.75,
      # of those, the share that asks the expert the teacher's rule of thumb picks for the
      # preference (the rest ask a uniformly random expert)
      preferred_expert_fraction=0.75,
      learning_rate=5e-3,
      warmup_steps=10,
  ))
  c.rl = ConfigDict(dict(
      algorithm="grpo",                        # "grpo" (group z-score), "rloo" or "ppo" (critic + GAE)
      total_steps=100,                         # RL optimizer steps
      tasks_per_step=16,                       # tasks per step (each with a sampled preference)
      group_size=4,                            # episodes per task
      learning_rate=2e-4,
      warmup_steps=5,
      micro_batches=1,                         # gradient accumulation steps per update
      # how per-token losses are reduced: token_mean | seq_mean_token_mean | seq_sum_norm
      # (Dr.GRPO, normalised by episode.max_total_tokens)
      aggregation="token_mean",
      loss=ConfigDict(dict(                    # orchestra.rl.update.PolicyLossConfig
          clip_low=0.2,                        # ratio clipped to [1 - clip_low, 1 + clip_high]
          clip_high=0.28,
          dual_clip=placeholder(float),        # dual clip on negative advantages (None: off)
          tis_cap=placeholder(float),          # truncated IS weight old/sampler (None: off)
          kl_coef=0.0,                         # 0: no reference model at all
          kl_estimator="mse",                  # k1 | k3 (low_var_kl) | mse (k2)
          entropy_coef=0.01,                   # keeps exploring while routing is learned
      )),
      std_threshold=0.05,                      # homogeneity filter on a group's reward std
      invalid_format="zero",                   # "zero" or "drop" episodes with bad tool calls
      max_concurrent_episodes=64,
      # PPO only (algorithm="ppo"): the value model starts from the SFT policy's trunk.
      value_learning_rate=1e-3,                # value model's AdamW learning rate
      value_clip=0.2,                          # clipped value loss range
      gamma=1.0,                               # GAE discount over policy tokens
      gae_lambda=1.0,                          # GAE lambda
  ))
  # Preference vectors: (code_interpreter, local_search, expert-small, expert-large, expert-batch,
  # outcome, cost, latency). Rewards are P . minmax(features) for correct episodes (DESIGN
  # section 2).
  c.preferences = ConfigDict(dict(
      balanced=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.5),
      low_cost=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0),
      high_accuracy=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
      low_latency=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0),
  ))
  c.train_preferences = ("balanced", "low_cost", "high_accuracy", "low_latency")  # uniform per task
  c.checkpoint = ConfigDict(dict(
      every=10,                                # save every N steps (and at each stage end)
      keep=2,                                  # newest checkpoints kept
  ))
  c.eval = ConfigDict(dict(
      split="test",
      num_tasks=90,                            # test tasks per (policy, preference)
      policies=("rl", "sft", "random", "cheapest", "strongest"),
      preferences=("balanced", "low_cost", "high_accuracy", "low_latency"),
      temperature=0.0,                         # greedy evaluation
  ))
  return c
