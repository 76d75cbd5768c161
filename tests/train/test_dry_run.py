"""The dry run's checks that need no subprocess: config values, init_from shapes, one
optimizer builder, the memory plan."""

import dataclasses
import importlib.util
import os

import jax.numpy as jnp
import pytest

from orchestra.models import DecoderConfig, MemoryOptions, RopeConfig
from orchestra.train.activation_plan import (SHORT_TOKENS, activation_plan, rows_per_device,
                                             step_temp_bytes)
from orchestra.train.dry_run import memory_plan
from orchestra.train.setup_base import (ConfigValueError, check_init_from,
                                        declared_model_config, optimizer_config,
                                        policy_loss_config, validate)

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_a_qa_run_with_an_sft_stage_is_refused():
  config = load("qwen3_8b_grpo")
  config.sft.steps = 10
  with pytest.raises(ConfigValueError, match="config.sft.steps=10: a QA run has no scripted"):
    validate(config)


@pytest.mark.parametrize("field, value, message", [
    ("rollout.engine", "grpc", "config.rollout.engine='grpc'"),
    ("model.dtype", "float8", "config.model.dtype='float8'"),
    ("mesh.shape", (2, -1, -1), "config.mesh: mesh shape (2, -1, -1)"),
])
def test_bad_model_mesh_and_rollout_values_name_the_field(field, value, message):
  config = load("qwen3_8b_grpo")
  subtree, key = field.split(".")
  config[subtree][key] = value
  with pytest.raises(ConfigValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate(config)


@pytest.mark.parametrize("changes, message", [
    (dict(max_staleness=2), r"config.rollout.max_staleness=2: expected 0 \(on-policy\) or 1"),
    (dict(max_staleness=1), "set config.rl.loss.tis_cap"),
    (dict(max_staleness=1, engine="jax"), "set config.rollout.engine='http'"),
])
def test_sampling_ahead_needs_rollout_servers_and_the_importance_weight(changes, message):
  config = load("qwen3_8b_grpo")
  config.rollout.update(changes)
  with pytest.raises(ConfigValueError, match=message):
    validate(config)
  config.rollout.engine, config.rl.loss.tis_cap = "http", 2.0
  if changes["max_staleness"] == 1:
    validate(config)                                          # servers + tis_cap: accepted


def test_an_unknown_qa_tool_is_named():
  config = load("qwen3_8b_grpo")
  config.tools.names = config.tools.names[:-1] + ("oracle",)
  with pytest.raises(ConfigValueError, match=r"unknown tools \['oracle'\]"):
    validate(config)


def test_init_from_must_have_the_configured_shape():
  config = load("qwen3_1p7b_grpo")
  config.model.init_from = "/ckpt/Qwen3-1.7B"
  same = declared_model_config(config)
  check_init_from(config, same)                               # no error
  other = DecoderConfig("qwen3", vocab_size=151_936, hidden_size=4096, intermediate_size=6144,
                        num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                        tie_word_embeddings=True, rope=RopeConfig(theta=1e6), qk_norm=True)
  with pytest.raises(ConfigValueError,
                     match="config.model.hidden_size=2048 but /ckpt/Qwen3-1.7B/config.json has 4096"):
    check_init_from(config, other)


def test_one_builder_gives_each_stage_its_optimizer():
  config = load("tiny_cpu")
  sft, rl, value = (optimizer_config(config, s) for s in ("sft", "rl", "value"))
  assert (sft.schedule, sft.total_steps, sft.learning_rate) == ("cosine", config.sft.steps,
                                                                config.sft.learning_rate)
  assert (rl.schedule, rl.learning_rate, rl.warmup_steps) == ("constant", config.rl.learning_rate,
                                                              config.rl.warmup_steps)
  assert value.learning_rate == config.rl.value_learning_rate


def test_memory_plan_divides_the_parameters_over_the_mesh():
  config = load("qwen3_1p7b_grpo")
  one = memory_plan(declared_model_config(config), config)
  config.mesh.num_devices = 8
  eight = memory_plan(declared_model_config(config), config)
  assert one["num_params"] == eight["num_params"] == declared_model_config(config).num_params
  assert eight["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert eight["param_gib_per_device"] == pytest.approx(one["param_gib_per_device"] / 8, rel=0.01)
  # AdamW mu and nu in the parameters' dtype: twice the parameter bytes
  assert one["optimizer_gib"] == pytest.approx(2 * one["param_gib_per_device"], rel=0.01)
  assert eight["optimizer_gib_per_device"] == pytest.approx(one["optimizer_gib"] / 8, rel=0.01)
  assert eight["gradient_gib_per_device"] == eight["param_gib_per_device"]
  assert eight["reference_gib_per_device"] == (eight["param_gib_per_device"]
                                               if config.rl.loss.kl_coef else 0.0)


def test_activation_plan_is_the_compiled_steps_scaled_by_layers():
  """The estimate is act(2) + (L - 2) (act(3) - act(2)), act(n) = temp(n, T) - temp(n, t0)
  of the compiled proxies, and it falls with blockwise attention and full remat."""
  config = load("tiny_cpu")
  config.rl.tasks_per_step, config.rl.group_size, config.episode.max_total_tokens = 2, 2, 512
  decoder = declared_model_config(config)
  plan = activation_plan(decoder, config, data_parallel=1)
  assert plan["rows_per_device"] == 16 and plan["tokens"] == 512     # rows padded to 16
  def expected_gib(memory):
    temp = {(n, t): step_temp_bytes(dataclasses.replace(decoder, num_layers=n), memory,
                                    jnp.float32, policy_loss_config(config), 16, t)
            for n in (2, 3) for t in (SHORT_TOKENS, 512)}
    act = {n: temp[n, 512] - temp[n, SHORT_TOKENS] for n in (2, 3)}
    return (act[2] + (decoder.num_layers - 2) * (act[3] - act[2])) / 2**30
  assert plan["activation_gib_per_device"] == pytest.approx(expected_gib(MemoryOptions()))
  config.model.remat, config.model.attention = "full", "blockwise"
  lean = activation_plan(decoder, config, data_parallel=1)
  assert lean["activation_gib_per_device"] == pytest.approx(
      expected_gib(MemoryOptions(remat="full", attention="blockwise")))
  # 0.53x at these shapes (0.37 against 0.69 GiB); the dense backward's temporaries set the
  # ratio (it was under 0.5x while that backward transposed the [T, S] probabilities).
  assert lean["activation_gib_per_device"] < 0.6 * plan["activation_gib_per_device"]
  assert rows_per_device(config, data_parallel=8) == 2                # 16 rows over 8


def test_the_plan_proxies_fused_attention_off_gpus_and_refuses_short_episodes():
  from orchestra.train.activation_plan import proxy_memory_options
  config = load("tiny_cpu")
  config.model.attention = "fused"            # XLA's fused kernel on CPU is dense in memory
  assert proxy_memory_options(config).attention == "blockwise"
  config.model.attention = "dense"
  assert proxy_memory_options(config).attention == "dense"
  config.episode.max_total_tokens = SHORT_TOKENS
  with pytest.raises(ConfigValueError, match="config.episode.max_total_tokens"):
    activation_plan(declared_model_config(config), config, 1)
