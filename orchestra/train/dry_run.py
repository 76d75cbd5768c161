"""`launch/train.py --dry_run`: check a config, build what it names, plan the run; train nothing.

Every config goes through the same steps:
  1. (`check_config`, before: bad values and fields no code reads, named.)
  2. The decoder. A run with its own tokenizer (toolscale_mini, tau2 domains) builds its
     setup in the workdir (tokenizer, search index), which gives the decoder; a run that
     starts from a Hugging Face policy takes `config.model`, checked field by field against
     `model.init_from`'s config.json when that folder exists.
  3. The plan, with abstract shapes (`nnx.eval_shape`: no memory is allocated): parameter
     count; per device over `config.mesh`, parameters, optimizer state, gradients, the KL
     reference and the activations of the compiled step (`activation_plan`), and whether
     they fit an 80 GB device.
  4. QA runs build their tools; runs with rollout servers build the client and print the
     command each server is started with.
  5. What a real launch still needs (API keys, index, checkpoint, data) is listed, not hidden.
Printed as readable lines, then the resolved run with its plan as one JSON object on the
last line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, AxisType
from ml_collections import ConfigDict

from orchestra.models import CausalLM, DecoderConfig
from orchestra.rl.update import make_optimizer
from orchestra.sharding import MESH_AXES, default_rules, logical_to_spec, resolve_mesh_shape
from orchestra.train.activation_plan import activation_plan
from orchestra.train.resolve import resolved_run
from orchestra.train.placement import PARAM_DTYPE, compute_dtype
from orchestra.train.qa_setup import qa_tool_spec
from orchestra.train.setup import build_setup
from orchestra.train.setup_base import (ConfigValueError, check_init_from, declared_model_config,
                                        memory_options, mesh_devices, optimizer_config)


def dry_run(config: ConfigDict, workdir: str | None = None, activations: bool = True) -> str:
  """The dry run's report (see the module docstring) for a config that passed `check_config`;
  `activations=False` skips compiling the step for the activation estimate.

  Raises `ConfigValueError` for what only building reveals (e.g. a shape that differs
  from `model.init_from`'s).
  """
  lines, needs = [], []
  with _workdir(workdir) as folder:
    decoder = _decoder(config, folder, lines, needs)
  plan = memory_plan(decoder, config)
  lines.append(f"model: {decoder.num_params / 1e6:,.2f}M params ({PARAM_DTYPE}, "
               f"{config.model.dtype} compute); mesh "
               f"{plan['mesh']} over {plan['num_devices']} devices: "
               f"{plan['param_gib_per_device']:.2f} GiB of params per device")
  if activations:
    dp = plan["mesh"]["data"] * plan["mesh"]["fsdp"]
    plan.update(activation_plan(decoder, config, dp))
    plan["total_gib_per_device"] = sum(_memory_parts(plan).values())
    plan["fits_80gb"] = plan["total_gib_per_device"] <= 80e9 / 2**30
  lines.append(_memory_line(plan))
  if config.env.get("name") == "qa":
    lines.append(f"tools: {', '.join(_qa_tools(config, needs))}")
  if config.rollout.engine == "http":
    lines.append(_rollout_servers(config))
  lines.append("missing for a real launch: " + ("; ".join(needs) if needs else "nothing"))
  run = resolved_run(config, decoder)
  run.update(plan=plan, missing_for_a_real_launch=needs)
  lines.append(json.dumps(run, default=str))
  return "\n".join(lines)


@contextlib.contextmanager
def _workdir(workdir: str | None):
  """The run folder, or a temporary one that is removed afterwards."""
  if workdir:
    yield workdir
    return
  with tempfile.TemporaryDirectory(prefix="orchestra-dry-run-") as folder:
    yield folder


def _decoder(config: ConfigDict, workdir: str, lines: list[str], needs: list[str]
             ) -> DecoderConfig:
  init_from = config.model.init_from
  have_init = bool(init_from) and os.path.isfile(os.path.join(init_from, "config.json"))
  if config.env.get("name") != "qa" and (have_init or not init_from):
    setup = build_setup(config, workdir)
    lines.append(f"config ok: {setup.model_config.num_params / 1e6:.2f}M-parameter model, "
                 f"{len(setup.tasks('train'))} train tasks, tools {list(setup.tool_names)}")
    return setup.model_config
  if have_init:
    check_init_from(config, DecoderConfig.from_hf_dir(init_from))
  else:
    needs.append(f"model.init_from={init_from!r}: a Hugging Face folder with config.json "
                 "(CHECKPOINT_PATH)")
  if config.env.get("name") == "qa" and not os.path.isfile(config.env.data):
    needs.append(f"env.data={config.env.data!r}: the training questions (TRAIN_DATA)")
  return declared_model_config(config)


def memory_plan(decoder: DecoderConfig, config: ConfigDict) -> dict:
  """Parameter count and GiB per device over `config.mesh` of the parameters, the AdamW
  state and the gradients (sharded like the parameters), the KL reference (when
  `kl_coef > 0`) and, when the step scans its layers (`remat` set), their stacked copy and
  its gradient. Parameters are float32 master weights whatever the compute dtype
  (placement.py)."""
  abstract = nnx.eval_shape(lambda: CausalLM(decoder, param_dtype=PARAM_DTYPE,
                                             dtype=compute_dtype(config),
                                             memory=memory_options(config),
                                             rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  num_devices = mesh_devices(config)
  shape = resolve_mesh_shape(config.mesh.shape, num_devices)
  mesh = AbstractMesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  rules, per_device, layers_per_device = default_rules(), 0, 0
  for path, v in nnx.to_flat_state(params):
    spec = logical_to_spec(v.get_metadata().get("logical_axes"), v.shape, mesh, rules)
    split = [math.prod(mesh.shape[a] for a in ((ax,) if isinstance(ax, str) else ax))
             if ax else 1 for ax in spec] + [1] * (len(v.shape) - len(spec))
    count = math.prod(s // k for s, k in zip(v.shape, split, strict=True))
    per_device += count
    layers_per_device += count if path[:2] == ("model", "layers") else 0
  optimizer = make_optimizer(optimizer_config(config, "rl"))
  opt_shapes = jax.eval_shape(optimizer.init, params)
  opt_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(opt_shapes))
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  param_gib = per_device * np.dtype(PARAM_DTYPE).itemsize / 2**30
  return {"num_params": num_params, "mesh": dict(zip(MESH_AXES, shape)),
          "num_devices": num_devices, "param_gib_per_device": param_gib,
          "optimizer_gib": opt_bytes / 2**30,
          "optimizer_gib_per_device": opt_bytes / 2**30 * per_device / num_params,
          "gradient_gib_per_device": param_gib,
          "reference_gib_per_device": param_gib if config.rl.loss.kl_coef else 0.0,
          # a scanned (remat) step stacks the layers' parameters, and their gradient
          "layer_stack_gib_per_device": 0.0 if config.model.remat == "none" else
          2 * layers_per_device * np.dtype(PARAM_DTYPE).itemsize / 2**30}


def _memory_parts(plan: dict) -> dict[str, float]:
  """GiB per device of each part the plan has: parameters, AdamW state, gradients, KL
  reference, stacked layer copy, activations."""
  return {k: plan[f"{k}_gib_per_device"] for k in
          ("param", "optimizer", "gradient", "reference", "layer_stack", "activation")
          if f"{k}_gib_per_device" in plan}


def _memory_line(plan: dict) -> str:
  """The parts per device, and whether their total fits an 80 GB accelerator (74.5 GiB)."""
  text = ", ".join(f"{k} {v:.2f}" for k, v in _memory_parts(plan).items())
  if "fits_80gb" not in plan:
    return f"memory per device (GiB): {text}; activations not planned (--dry_run_activations)"
  return (f"memory per device (GiB): {text} ({plan['rows_per_device']} x {plan['tokens']} "
          f"tokens, from the compiled step with {plan['proxy_attention']} attention); total {plan['total_gib_per_device']:.2f}: "
          + ("fits" if plan["fits_80gb"] else "does NOT fit") + " an 80 GB device")


def _qa_tools(config: ConfigDict, needs: list[str]) -> list[str]:
  """Builds each tool of `config.tools.names` (and `answer`); returns their names."""
  from orchestra.tools import ToolConfigError, build_tool
  t = config.tools
  built = {"answer": build_tool({"type": "answer"})}
  key_vars = {spec.get("api_key_env") for spec in t.llm.values()} - {None, ""}
  key_vars |= {"TAVILY_API_KEY"} if "web_search" in t.names else set()
  with _placeholder_env(sorted(key_vars)) as missing:
    needs += [f"{name} (API key)" for name in missing]
    for name in t.names:
      if name == "local_search" and not os.path.isfile(os.path.join(t.index_dir, "meta.json")):
        needs.append(f"tools.index_dir={t.index_dir!r}: a search index from "
                     "launch/build_index.py (INDEX_DIR)")
        continue
      try:
        built[name] = build_tool(qa_tool_spec(config, name))
      except ToolConfigError as e:
        if name != "web_search":
          raise ConfigValueError(f"config.tools ({name}): {e}") from None
        needs.append(str(e))             # an optional package the launch machine installs
  return sorted(built)


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


def _rollout_servers(config: ConfigDict) -> str:
  """The rollout client over `rollout.urls` and the command each vLLM server runs."""
  from orchestra.engines.http_engine import HTTPEngine, vllm_serve_command
  r = config.rollout
  engine = HTTPEngine(r.urls, r.served_model_name)
  ahead = ("; each step's episodes sampled during the update before it (max_staleness=1)"
           if r.max_staleness else "")
  if r.server != "vllm":
    return f"rollouts: {len(engine.base_urls)} launch/serve.py server(s) at {list(r.urls)}{ahead}"
  argv, env = vllm_serve_command(config.model.init_from or "<model.init_from>",
                                 tensor_parallel_size=r.tensor_parallel_size,
                                 served_model_name=r.served_model_name,
                                 max_model_len=config.episode.max_total_tokens)
  return (f"rollouts: {len(engine.base_urls)} vLLM server(s), each started as: "
          f"{' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(argv)}; weights synced "
          f"by {r.weight_sync} through {r.sync_dir}{ahead}")
