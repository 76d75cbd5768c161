"""Hugging Face checkpoint import and export for the NNX decoders.

`load_hf` reads a local folder (`config.json` plus `model.safetensors` or
sharded `model-*.safetensors` with `model.safetensors.index.json`, bf16 or
fp32) tensor by tensor; with a mesh each device receives only its own
slice, so the full model never sits on one device. `save_hf` writes the
folder `transformers.AutoModelForCausalLM.from_pretrained` (and vLLM) load:
`config.json`, `generation_config.json`, sharded safetensors with an index,
and optionally the tokenizer files.

Layout conversions (HF Linear weights are [out, in]):
  q/k/v   [N*E, D]  <->  [D, N, E]       o     [D, H*E]  <->  [H, E, D]
  gate/up [F, D]    <->  [D, F]          down  [D, F]    <->  [F, D]
  lm_head [V, D]    <->  [D, V]          embed, norms, 1-d biases unchanged
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from orchestra.checkpoint.errors import CheckpointError
from orchestra.checkpoint.safetensors_view import SafetensorsView, write_safetensors
from orchestra.models.config import DecoderConfig, MemoryOptions
from orchestra.models.decoder import CausalLM, ValueModel
from orchestra.sharding.rules import Rules, state_shardings

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_NUMPY_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one of our arrays maps onto its Hugging Face tensor (HF Linear weights are
  [out, in]); `heads` is (N, E) for the head-split kinds.

    same       ours == HF                   transpose  ours [A, B] = HF [B, A]^T
    heads_in   ours [D, N, E] <- HF [N*E, D]  heads_out  ours [H, E, D] <- HF [D, H*E]
    bias_heads ours [N, E]    <- HF [N*E]
  Hashable: the export's jitted conversion is compiled once per (layout, shape, dtype).
  """
  kind: str
  heads: tuple[int, ...] = ()

  def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF tensor's shape for one of ours of `shape`."""
    if self.kind == "same":
      return tuple(shape)
    if self.kind == "bias_heads":
      return (int(np.prod(shape)),)
    split = 2 if self.kind == "heads_out" else 1
    return (int(np.prod(shape[split:])), int(np.prod(shape[:split])))

  def to_hf(self, w: jax.Array) -> jax.Array:
    """Ours -> HF, in jax.numpy (traced by the export's jit)."""
    hf_shape = self.hf_shape(w.shape)
    if self.kind in ("same", "bias_heads"):
      return w.reshape(hf_shape)
    return w.reshape(hf_shape[::-1]).T

  def from_hf(self, w: np.ndarray) -> np.ndarray:
    """HF -> ours as a new C-contiguous, 64-byte aligned array (`w` may be a read-only view
    of the file): JAX's CPU client adopts such a buffer instead of copying it."""
    if self.kind in ("same", "bias_heads"):
      ours = _aligned_empty(w.shape, w.dtype)
      ours[...] = w
      return ours.reshape(w.shape if self.kind == "same" else self.heads)
    ours = _transposed(w)
    if self.kind == "heads_in":
      return ours.reshape(w.shape[1], *self.heads)
    if self.kind == "heads_out":
      return ours.reshape(*self.heads, w.shape[0])
    return ours


SAME, TRANSPOSE = Layout("same"), Layout("transpose")


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One parameter: its path in the NNX state, its HF name and its `Layout`."""
  path: tuple
  hf_name: str
  layout: Layout


def _aligned_empty(shape: tuple[int, ...], dtype, align: int = 64) -> np.ndarray:
  """`np.empty(shape, dtype)` starting on an `align`-byte boundary (numpy guarantees 16)."""
  nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
  raw = np.empty(nbytes + align, np.uint8)
  start = -raw.ctypes.data % align
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def _transposed(w: np.ndarray, tile: int = 256) -> np.ndarray:
  """`w.T` as a new C-contiguous array, copied tile by tile: both sides of a tile stay in
  cache, 4x faster than numpy's strided copy for a [151936, 896] embedding."""
  out = _aligned_empty(w.shape[::-1], w.dtype)
  for i in range(0, w.shape[0], tile):
    for j in range(0, w.shape[1], tile):
      out[j:j + tile, i:i + tile] = w[i:i + tile, j:j + tile].T
  return out


def tensor_map(cfg: DecoderConfig, with_lm_head: bool = True) -> list[TensorMap]:
  """Every parameter of the decoder with its Hugging Face name and layout."""
  h, k, e = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  entries = [TensorMap(("model", "embed"), "model.embed_tokens.weight", SAME),
             TensorMap(("model", "final_norm", "scale"), "model.norm.weight", SAME)]
  if with_lm_head and not cfg.tie_word_embeddings:
    entries.append(TensorMap(("lm_head",), "lm_head.weight", TRANSPOSE))
  for i in range(cfg.num_layers):
    def add(path, name, layout, i=i):
      entries.append(TensorMap(("model", "layers", i) + path, f"model.layers.{i}.{name}", layout))
    add(("input_norm", "scale"), "input_layernorm.weight", SAME)
    add(("post_attn_norm", "scale"), "post_attention_layernorm.weight", SAME)
    for proj, n in (("q", h), ("k", k), ("v", k)):
      add(("attn", f"{proj}_proj"), f"self_attn.{proj}_proj.weight", Layout("heads_in", (n, e)))
      if cfg.qkv_bias:
        add(("attn", f"{proj}_bias"), f"self_attn.{proj}_proj.bias",
            Layout("bias_heads", (n, e)))
    add(("attn", "o_proj"), "self_attn.o_proj.weight", Layout("heads_out", (h, e)))
    if cfg.o_bias:
      add(("attn", "o_bias"), "self_attn.o_proj.bias", SAME)
    if cfg.qk_norm:
      add(("attn", "q_norm", "scale"), "self_attn.q_norm.weight", SAME)
      add(("attn", "k_norm", "scale"), "self_attn.k_norm.weight", SAME)
    for proj in ("gate", "up", "down"):
      add(("mlp", f"{proj}_proj"), f"mlp.{proj}_proj.weight", TRANSPOSE)
      if cfg.mlp_bias:
        add(("mlp", f"{proj}_bias"), f"mlp.{proj}_proj.bias", SAME)
  return entries


# ---------------------------------------------------------------------- import
class _SafetensorsFolder:
  """Lazy access to the tensors of a (possibly sharded) safetensors folder."""

  def __init__(self, path: str):
    index_path = os.path.join(path, SAFETENSORS_INDEX)
    single_path = os.path.join(path, SAFETENSORS_FILE)
    if os.path.isfile(index_path):
      try:
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index ({e!r})") from None
    elif os.path.isfile(single_path):
      weight_map = None
    else:
      raise CheckpointError(f"{path}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} "
                            "(only safetensors checkpoints are supported)")
    self._handles = {}
    self.weight_map = {}
    files = sorted(set(weight_map.values())) if weight_map else [SAFETENSORS_FILE]
    for name in files:
      file_path = os.path.join(path, name)
      if not os.path.isfile(file_path):
        raise CheckpointError(f"{file_path} is listed in {SAFETENSORS_INDEX} but missing")
      try:
        handle = SafetensorsView(file_path)
      except ValueError as e:
        raise CheckpointError(str(e)) from None
      self._handles[name] = handle
      for key in handle.keys():
        self.weight_map[key] = name

  def __contains__(self, name: str) -> bool:
    return name in self.weight_map

  def shape(self, name: str) -> tuple[int, ...]:
    return self._handles[self.weight_map[name]].shape(name)

  def get(self, name: str) -> np.ndarray:
    """A read-only view of the mapped file (the layout conversion makes the one copy)."""
    try:
      return self._handles[self.weight_map[name]].get(name)
    except ValueError as e:
      raise CheckpointError(str(e)) from None


def load_hf(path: str | os.PathLike, dtype: str = "float32", *, compute_dtype: str | None = None,
            mesh: Mesh | None = None, rules: Rules | None = None, value_model: bool = False,
            memory: MemoryOptions = MemoryOptions()) -> CausalLM | ValueModel:
  """Loads a Hugging Face Qwen3 / Qwen2 / Llama folder into an NNX model.

  Args:
    path: local folder with `config.json` and safetensors weights.
    dtype: parameter dtype ("float32" or "bfloat16"; "float16" also accepted).
    compute_dtype: activation dtype (defaults to `dtype`).
    mesh: if given, every parameter is placed on its shards of this mesh
      (see `orchestra.sharding`); otherwise on the default device.
    rules: logical-axis rules for `mesh` (default `default_rules()`).
    value_model: build a `ValueModel` (backbone from the checkpoint, zero
      value head) instead of a `CausalLM`.
    memory: the model's `MemoryOptions` (remat, blockwise attention, logits chunk).
  """
  path = os.fspath(path)
  param_dtype = _dtype(dtype, "dtype")
  act_dtype = _dtype(compute_dtype or dtype, "compute_dtype")
  cfg = DecoderConfig.from_hf_dir(path)
  graphdef, abstract_state = _abstract_model(ValueModel if value_model else CausalLM, cfg,
                                             param_dtype, act_dtype, memory)
  shardings = state_shardings(abstract_state, mesh, rules)
  flat_vars = dict(nnx.to_flat_state(abstract_state))
  flat_shardings = dict(nnx.to_flat_state(shardings))
  folder = _SafetensorsFolder(path)

  entries = tensor_map(cfg, with_lm_head=not value_model)
  missing = [t.hf_name for t in entries if t.hf_name not in folder]
  if missing:
    raise CheckpointError(f"{path}: checkpoint lacks {len(missing)} tensors the config needs, "
                          f"e.g. {missing[:3]}")
  known = {t.hf_name for t in entries} | {"lm_head.weight"}
  unexpected = sorted(set(folder.weight_map) - known)
  if unexpected:
    logging.warning("%s: ignoring %d unexpected tensors, e.g. %s", path, len(unexpected),
                    unexpected[:3])

  values = {}
  for t in entries:
    variable = flat_vars.pop(t.path)
    array = t.layout.from_hf(folder.get(t.hf_name))
    if array.shape != variable.shape:
      raise CheckpointError(f"{path}: {t.hf_name} has shape {folder.shape(t.hf_name)}, "
                            f"the config implies {variable.shape} in our layout")
    values[t.path] = _place(array, flat_shardings[t.path], variable.dtype)
  for rest_path, variable in flat_vars.items():   # the value head: not in HF checkpoints
    if not value_model:
      raise CheckpointError(f"internal: parameter {rest_path} has no Hugging Face mapping")
    values[rest_path] = _place(np.zeros(variable.shape, np.float32),
                               flat_shardings[rest_path], variable.dtype)

  state = nnx.from_flat_state([(p, v.replace(values[p])) for p, v in
                               nnx.to_flat_state(abstract_state)])
  return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=8)
def _abstract_model(cls, cfg: DecoderConfig, param_dtype, act_dtype, memory: MemoryOptions):
  """(graphdef, abstract state) of a model: tracing the init of a 0.5B model takes 1.5 s,
  and a rollout server reloads the same shapes at every step."""
  make = lambda: cls(cfg, param_dtype=param_dtype, dtype=act_dtype, memory=memory,
                     rngs=nnx.Rngs(0))
  return nnx.split(nnx.eval_shape(make))


def _dtype(name: str, field: str):
  if name not in DTYPES:
    raise ValueError(f"{field}={name!r}: expected one of {sorted(DTYPES)}")
  return DTYPES[name]


def _place(host: np.ndarray, sharding, dtype) -> jax.Array:
  """Puts a host array on its devices; each device converts only its slice."""
  def shard(index):          # a copy only where the slice or dtype needs one
    return np.asarray(host[index], dtype=dtype, order="C")
  return jax.make_array_from_callback(host.shape, sharding, shard)


# ---------------------------------------------------------------------- export
def save_hf(model: CausalLM, out_dir: str | os.PathLike, *, tokenizer_dir: str | None = None,
            dtype: str | None = None, max_shard_bytes: int = 5 * 2**30) -> str:
  """Writes `model` as a Hugging Face folder and returns its path.

  Args:
    model: a `CausalLM` (sharded or not; each tensor is gathered in turn).
    out_dir: destination folder: absent, empty, or a previous export, which is
      replaced as a whole (anything else is refused, see `check_export_destination`).
      Files are written to a temporary sibling folder which is renamed into place at
      the end, so a crash never leaves a half-written checkpoint under `out_dir`.
    tokenizer_dir: folder whose tokenizer files are copied alongside.
    dtype: "float32" or "bfloat16" for the weights (default: the params' dtype).
    max_shard_bytes: split the weights into files of at most this size.
  """
  if not isinstance(model, CausalLM):
    raise TypeError(f"save_hf exports CausalLM models, got {type(model).__name__}")
  out_dir = os.path.abspath(os.fspath(out_dir))
  cfg = model.config
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  if dtype is None:
    dtype = str(jnp.dtype(flat[("model", "embed")].dtype))
  np_dtype = _NUMPY_DTYPES.get(dtype)
  if np_dtype is None:
    raise ValueError(f"dtype={dtype!r}: expected one of {sorted(_NUMPY_DTYPES)}")
  if tokenizer_dir is not None and not any(
      os.path.isfile(os.path.join(tokenizer_dir, f)) for f in TOKENIZER_FILES):
    raise CheckpointError(f"tokenizer_dir={tokenizer_dir}: no tokenizer files found "
                          f"(looked for {', '.join(TOKENIZER_FILES[:2])}, ...)")

  check_export_destination(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  try:
    _write_weights(flat, tensor_map(cfg), np_dtype, tmp_dir, max_shard_bytes)
    for name, text in _hf_config_files(cfg, dtype).items():
      with open(os.path.join(tmp_dir, name), "w") as f:
        f.write(text)
    if tokenizer_dir is not None:
      for name in TOKENIZER_FILES:
        src = os.path.join(tokenizer_dir, name)
        if os.path.isfile(src):
          shutil.copy2(src, os.path.join(tmp_dir, name))
    if os.path.exists(out_dir):              # a previous export (checked above): swap it out
      old_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
      os.replace(out_dir, os.path.join(old_dir, "export"))
      os.replace(tmp_dir, out_dir)
      shutil.rmtree(old_dir, ignore_errors=True)
    else:
      os.replace(tmp_dir, out_dir)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return out_dir


def generation_eos_ids(path: str | os.PathLike) -> tuple[int, ...]:
  """The eos ids vLLM takes from a model folder besides the tokenizer's: those of
  `generation_config.json` (one id or a list; a Qwen3 chat model lists <|im_end|> and
  <|endoftext|>), or of `config.json` where there is no generation config."""
  path = os.fspath(path)
  file = os.path.join(path, "generation_config.json")
  if not os.path.exists(file):
    return DecoderConfig.from_hf_dir(path).stop_token_ids
  try:
    with open(file) as f:
      eos = json.load(f).get("eos_token_id")
    return () if eos is None else tuple(int(t) for t in (eos if isinstance(eos, list) else [eos]))
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise CheckpointError(f"{file}: no readable eos_token_id ({type(e).__name__}: {e})") from None


@functools.lru_cache(maxsize=8)
def _hf_config_files(cfg: DecoderConfig, dtype: str) -> dict[str, str]:
  """{file name: text} of transformers' config.json and generation_config.json for `cfg`
  with weights in `dtype`. Built once per (cfg, dtype): building and serialising
  transformers' config objects is half of a small model's export (~10 ms), and a run with
  rollout servers exports every RL step."""
  import transformers  # heavy import, only needed for export
  hf_config = transformers.AutoConfig.for_model(cfg.model_type, **cfg.to_hf_kwargs())
  hf_config.architectures = [type(hf_config).__name__.replace("Config", "ForCausalLM")]
  hf_config.dtype = dtype
  with tempfile.TemporaryDirectory() as folder:
    hf_config.save_pretrained(folder)
    transformers.GenerationConfig.from_model_config(hf_config).save_pretrained(folder)
    files = {}
    for name in sorted(os.listdir(folder)):
      with open(os.path.join(folder, name)) as f:
        files[name] = f.read()
    return files


_EXPORT_FILE = re.compile(r"(config\.json|generation_config\.json|model\.safetensors"
                          r"|model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json)")


def check_export_destination(out_dir: str) -> None:
  """Raises unless `out_dir` is absent, empty, or a previous export (safe to replace).

  An export replaces its destination as a whole, so a folder holding anything an
  export does not write (a run's checkpoints, metrics, notes) is refused, never deleted.
  """
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise CheckpointError(f"export destination {out_dir} is a file, not a folder")
  entries = os.listdir(out_dir)
  foreign = [e for e in entries if not (os.path.isfile(os.path.join(out_dir, e))
                                        and (_EXPORT_FILE.fullmatch(e) or e in TOKENIZER_FILES))]
  if entries and (foreign or "config.json" not in entries):
    shown = ", ".join(sorted(foreign or entries)[:5])
    raise CheckpointError(f"export destination {out_dir} is not empty and not a previous export "
                          f"(it holds {shown}); refusing to replace it: choose a new or empty "
                          "folder")


@functools.partial(jax.jit, static_argnames=("layout", "dtype"))
def _hf_tensor(w: jax.Array, layout: Layout, dtype) -> jax.Array:
  """One parameter in its HF layout and the exported dtype."""
  return layout.to_hf(w).astype(dtype)


def _exported(value, layout: Layout, np_dtype) -> np.ndarray:
  """One parameter on the host in its HF layout and dtype, converted where it lives; a host
  array (a multi-process run's gathered policy) on the CPU backend, never an accelerator."""
  if not isinstance(value, jax.Array):
    value = jax.device_put(value, jax.devices("cpu")[0])
  return np.asarray(jax.device_get(_hf_tensor(value, layout, np_dtype)))


def _write_weights(flat, entries: list[TensorMap], np_dtype, out_dir: str, max_shard_bytes: int):
  """Writes safetensors files of at most `max_shard_bytes` (plus an index if > 1).

  Each tensor is converted to its HF layout and dtype where it lives (`_hf_tensor`, one
  jitted program per layout and shape: on an accelerator the transposes run there and only
  the exported dtype's bytes come back), then fetched and written: one tensor at a time
  is ever on the host.
  """
  itemsize = np.dtype(np_dtype).itemsize
  shards: list[list[tuple[TensorMap, tuple[int, ...]]]] = [[]]
  shard_bytes = total_bytes = 0
  for t in entries:
    shape = t.layout.hf_shape(flat[t.path][...].shape)
    nbytes = itemsize * int(np.prod(shape))
    if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
      shards.append([])
      shard_bytes = 0
    shards[-1].append((t, shape))
    shard_bytes += nbytes
    total_bytes += nbytes

  written: list[tuple[str, list[str]]] = []   # (temporary file name, tensor names)
  for i, shard in enumerate(shards):
    name = f"part-{i:05d}.safetensors"
    arrays = (_exported(flat[t.path][...], t.layout, np_dtype) for t, _ in shard)
    write_safetensors(os.path.join(out_dir, name),
                      [(t.hf_name, shape, np_dtype) for t, shape in shard], arrays,
                      metadata={"format": "pt"})
    written.append((name, [t.hf_name for t, _ in shard]))

  if len(written) == 1:
    os.rename(os.path.join(out_dir, written[0][0]), os.path.join(out_dir, SAFETENSORS_FILE))
    return
  weight_map = {}
  for i, (tmp_name, names) in enumerate(written):
    final = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
    os.rename(os.path.join(out_dir, tmp_name), os.path.join(out_dir, final))
    weight_map.update({name: final for name in names})
  with open(os.path.join(out_dir, SAFETENSORS_INDEX), "w") as f:
    json.dump({"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))},
              f, indent=2)
