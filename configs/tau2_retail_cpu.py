"""RL on a tau2-format domain: tau2-Bench's retail tasks, offline on CPU (a plumbing-scale run).

  python launch/train.py --config configs/tau2_retail_cpu.py --workdir runs/retail
  python launch/eval.py --config configs/tau2_retail_cpu.py --workdir runs/retail

The policy is the agent of tau2's conversation loop (domain policy in its system prompt,
the 16 retail tools); each episode is graded by tau2's evaluator and the preference reward
is built on its success (orchestra/train/domain_setup.py). Offline, the user is the ticket
user: it hands over the task as a ticket and ends the conversation at the agent's first
message. With a user-simulator endpoint set `--config.env.user=llm
--config.env.user_url=http://host:8000/v1 --config.env.user_model=NAME` (and
`user_api_key_env` for a hosted one); `judge_url`/`judge_model` grade NL assertions.
Other domains: `--config.env.domain=airline`, or the module path of a ToolScale-format
domain of your own with `--config.env.data` at its data folder.

A ~1M-parameter model on 2 CPU cores cannot solve retail tasks it has not memorised; this
config exercises the whole pipeline at small cost and is the template for real runs
(a Qwen3 checkpoint, long contexts, an LLM user, GPUs).
"""

import importlib.util
import os

from ml_collections import ConfigDict

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir, "shared", "data", "tau2"))


def _tiny_cpu():
  """configs/tiny_cpu.py, whose model, optimiser and RL settings this run starts from."""
  spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(HERE, "tiny_cpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config() -> ConfigDict:
  c = _tiny_cpu().get_config()
  c.env = ConfigDict(dict(
      name="tau2_domain",
      domain="retail",                         # airline | retail | a module path (ToolScale-format)
      data=DATA,                               # holds domains/<domain>/ (db, policy, tasks, splits)
      user="ticket",                           # "ticket" (offline) or "llm" (user-simulator endpoint)
      user_url="", user_model="", user_api_key_env="",
      user_price_in=0.0, user_price_out=0.0,   # USD per 1M tokens (reported, not the agent's bill)
      user_max_tokens=512, user_temperature=0.0,
      judge_url="", judge_model="", judge_api_key_env="",   # NL assertions (empty: not evaluated)
      max_steps=30,                            # tau2 steps (agent, user and tool-result messages)
      max_errors=5,                            # failed tool calls allowed
  ))
  # Extra tools next to the domain's (llm experts such as call_expert, each with a spec in
  # tools.llm: model, base_url, api_key_env, price_in_per_1m, price_out_per_1m, description).
  c.tools = ConfigDict(dict(names=(), llm=ConfigDict()))
  c.model.vocab_size = 4096                    # the fixed policy + tool schemas become ~500 tokens
  c.model.num_layers = 2                       # ~1.5k-token conversations: attention dominates
  c.model.attention = "blockwise"              # fwd+bwd of 4 x 2048 tokens 0.87 s vs 1.42 dense
  c.episode = ConfigDict(dict(
      max_turns=16,                            # policy turns (tool calls and messages)
      turn_tokens=96,
      max_total_tokens=4096,                   # policy + tools + ticket + turns + observations
      temperature=1.0,
      max_observation_tokens=256,
      policy_price_in_per_1m=0.2,
      policy_price_out_per_1m=0.2,
      policy_latency_per_token_s=0.02,
  ))
  c.sft = ConfigDict(dict(steps=40, batch_size=4, num_demos=148, learning_rate=5e-3,
                          warmup_steps=5))
  c.rl.total_steps = 4
  c.rl.tasks_per_step = 4
  c.rl.group_size = 4
  c.rl.max_concurrent_episodes = 16
  # (outcome, cost, latency): no extra tools, so no tool weights.
  c.preferences = ConfigDict(dict(
      balanced=(1.0, 0.5, 0.5),
      low_cost=(1.0, 1.0, 0.0),
      high_accuracy=(1.0, 0.0, 0.0),
  ))
  c.train_preferences = ("balanced", "low_cost", "high_accuracy")
  c.checkpoint.every = 2
  c.eval = ConfigDict(dict(split="test", num_tasks=40, policies=("rl", "sft"),
                           preferences=("balanced",), temperature=0.0))
  return c
