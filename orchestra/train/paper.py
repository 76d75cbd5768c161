"""Dry run of a paper-scale (vLLM backend) config: build every object it names, call nothing.

The model is built with abstract shapes (`nnx.eval_shape`: no memory), its
sharding is planned over `num_devices` with the config's mesh, the optimizer
state is shaped, the tools and the vLLM client are constructed. Missing
environment (API keys, index, checkpoint) is reported as what a real launch
would need, not hidden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, AxisType
from ml_collections import ConfigDict

from orchestra.models import CausalLM, DecoderConfig, RopeConfig
from orchestra.rl.update import PolicyLossConfig
from orchestra.sharding import MESH_AXES, default_rules, logical_to_spec, resolve_mesh_shape


def model_config(config: ConfigDict) -> DecoderConfig:
  """From the checkpoint's config.json when present, else from `config.model`."""
  if config.checkpoint_path and os.path.isfile(os.path.join(config.checkpoint_path, "config.json")):
    return DecoderConfig.from_hf_dir(config.checkpoint_path)
  m = config.model
  return DecoderConfig("qwen3", vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                       intermediate_size=m.intermediate_size, num_layers=m.num_layers,
                       num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
                       rope=RopeConfig(theta=m.rope_theta), qk_norm=True,
                       tie_word_embeddings=m.tie_word_embeddings)


@contextlib.contextmanager
def _placeholder_env(names):
  """Temporarily sets missing variables so constructors run; restores the environment."""
  added = [n for n in names if not os.environ.get(n)]
  os.environ.update({n: "dry-run-placeholder" for n in added})
  try:
    yield added
  finally:
    for n in added:
      del os.environ[n]


def dry_run(config: ConfigDict) -> str:
  from orchestra.engines.http_engine import HTTPEngine, vllm_serve_command
  from orchestra.rl.update import OptimizerConfig, make_optimizer
  from orchestra.tools import build_tool

  lines, needs = [], []
  cfg = model_config(config)
  dtype = {"bfloat16": jax.numpy.bfloat16, "float32": jax.numpy.float32}[config.model.dtype]
  abstract = nnx.eval_shape(lambda: CausalLM(cfg, param_dtype=dtype, dtype=dtype,
                                             remat=config.model.remat, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  shape = resolve_mesh_shape(config.mesh, config.num_devices)
  mesh = AbstractMesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  rules, per_device = default_rules(), 0
  for _, v in nnx.to_flat_state(params):
    spec = logical_to_spec(v.get_metadata().get("logical_axes"), v.shape, mesh, rules)
    split = [math.prod(mesh.shape[a] for a in ((ax,) if isinstance(ax, str) else ax))
             if ax else 1 for ax in spec] + [1] * (len(v.shape) - len(spec))
    per_device += math.prod(s // k for s, k in zip(v.shape, split, strict=True))
  itemsize = np.dtype(dtype).itemsize
  lines.append(f"model: {cfg.model_type} {n_params / 1e9:.2f}B params ({config.model.dtype}); "
               f"mesh {dict(zip(MESH_AXES, shape))} over {config.num_devices} devices: "
               f"{per_device * itemsize / 2**30:.2f} GiB of params per device")
  optimizer = make_optimizer(OptimizerConfig(learning_rate=config.rl.learning_rate))
  opt_shapes = jax.eval_shape(optimizer.init, params)
  opt_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(opt_shapes))
  lines.append(f"optimizer: AdamW state {opt_bytes / 2**30:.1f} GiB in total "
               f"(/{shape[0] * shape[1] * shape[2]} when sharded like the params)")
  if not config.checkpoint_path:
    needs.append("CHECKPOINT_PATH (HF folder of the initial policy)")

  tools = {"answer": build_tool({"type": "answer"}),
           "code_interpreter": build_tool({"type": "code_interpreter",
                                           "timeout_s": config.tools.code_timeout_s})}
  if config.tools.index_dir and os.path.isfile(os.path.join(config.tools.index_dir, "meta.json")):
    tools["local_search"] = build_tool({"type": "local_search",
                                        "index_dir": config.tools.index_dir})
  else:
    needs.append("INDEX_DIR (a FAISS index from launch/build_index.py)")
  key_vars = {e["api_key_env"] for e in config.tools.experts if e.get("api_key_env")}
  with _placeholder_env(sorted(key_vars | ({"TAVILY_API_KEY"} if config.tools.web_search
                                           else set()))) as missing:
    needs += [f"{n} (API key)" for n in missing]
    for e in config.tools.experts:
      tools[e["name"]] = build_tool({"type": "llm", **e})
    if config.tools.web_search:
      try:
        tools["web_search"] = build_tool({"type": "web_search"})
      except Exception as err:  # noqa: BLE001 - report what a real launch needs
        needs.append(str(err))
  lines.append(f"tools: {', '.join(sorted(tools))}")
  engine = HTTPEngine(config.vllm.urls, config.vllm.model)
  argv, env = vllm_serve_command(config.checkpoint_path or "<CHECKPOINT_PATH>",
                                 tensor_parallel_size=config.vllm.tensor_parallel_size,
                                 served_model_name=config.vllm.model)
  lines.append(f"rollouts: {len(engine.base_urls)} vLLM server(s), each started as: "
               f"{' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(argv)}")
  rl = config.rl
  loss = PolicyLossConfig(**rl.loss.to_dict(), temperature=config.episode.temperature)
  lines.append(f"rl: {rl.algorithm}, {rl.total_steps} steps x {rl.tasks_per_step} tasks x "
               f"{rl.group_size} episodes, lr {rl.learning_rate:g}, {rl.micro_batches} "
               f"micro-batches, {rl.aggregation}; loss {loss}")
  n_tools = len(config.preferences[next(iter(config.preferences))])
  lines.append(f"preferences: {sorted(config.preferences)} ({n_tools} weights each)")
  lines.append("missing for a real launch: " + ("; ".join(needs) if needs else "nothing"))
  lines.append(json.dumps({
      "backend": config.backend,
      "model": {**cfg.to_dict(), "num_params": n_params, "dtype": config.model.dtype,
                "remat": config.model.remat},
      "mesh": dict(zip(MESH_AXES, shape)), "num_devices": config.num_devices,
      "optimizer": {"learning_rate": rl.learning_rate},
      "rl": {k: rl[k] for k in ("algorithm", "total_steps", "tasks_per_step", "group_size",
                                "micro_batches", "aggregation", "std_threshold",
                                "invalid_format")},
      "policy_loss": dataclasses.asdict(loss),
      "episode": config.episode.to_dict(),
  }, default=str))
  return "\n".join(lines)
