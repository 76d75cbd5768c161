"""Decoder hyper-parameters and their mapping to and from Hugging Face `config.json`.

One `DecoderConfig` describes every supported family:

| family  | q/k RMSNorm | qkv bias          | rope                 |
|---------|-------------|-------------------|----------------------|
| qwen3   | yes         | `attention_bias`  | default              |
| qwen2   | no          | always (o: none)  | default              |
| llama   | no          | `attention_bias`  | default or `llama3`  |

Both the transformers-4 spelling (`rope_theta` + `rope_scaling`) and the
transformers-5 spelling (`rope_parameters`) of the rope settings are read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")
SUPPORTED_ROPE_TYPES = ("default", "llama3")


class ConfigError(ValueError):
  """A Hugging Face config we cannot represent; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding settings.

  `rope_type="llama3"` rescales the inverse frequencies as Llama 3.1 does
  (`factor`, `low_freq_factor`, `high_freq_factor`,
  `original_max_position_embeddings`); `"default"` leaves them as
  `theta ** (-2i / head_dim)`.
  """
  theta: float = 10_000.0
  rope_type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


REMAT = ("none", "full", "dots")
ATTENTION = ("dense", "blockwise", "fused")


@dataclasses.dataclass(frozen=True)
class MemoryOptions:
  """How a model's training step trades compute for memory; none changes its results.

  remat: per block, "none" keeps activations, "full" recomputes them all in the backward
    pass, "dots" keeps the matmul outputs and recomputes the rest; with remat the blocks
    run as one scan over their stacked parameters (`Transformer._scan_blocks`).
  attention: "dense" ([T, T] scores), "blockwise" (`orchestra.models.blockwise_attention`:
    memory linear in T, every backend) or "fused" (`orchestra.models.fused_attention`:
    `jax.nn.dot_product_attention`, cuDNN's flash kernel on GPUs in bfloat16).
  logits_chunk: positions per chunk of LM-head logits in `CausalLM.token_stats`.
  """
  remat: str = "none"
  attention: str = "dense"
  logits_chunk: int = 1024

  def __post_init__(self):
    if self.remat not in REMAT or self.attention not in ATTENTION or self.logits_chunk < 1:
      raise ValueError(f"{self}: expected remat in {REMAT}, attention in {ATTENTION}, "
                       "logits_chunk >= 1")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and family of a causal decoder (no runtime dtype policy here)."""
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope: RopeConfig = RopeConfig()
  tie_word_embeddings: bool = False
  qk_norm: bool = False          # RMSNorm over head_dim on q and k (Qwen3).
  qkv_bias: bool = False         # bias on q/k/v projections (Qwen2; attention_bias).
  o_bias: bool = False           # bias on the output projection (Llama/Qwen3 attention_bias).
  mlp_bias: bool = False         # bias on gate/up/down (Llama mlp_bias).
  max_position_embeddings: int = 32_768
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(
          f"model_type={self.model_type!r} is not supported; "
          f"expected one of {SUPPORTED_MODEL_TYPES}")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(
          f"num_attention_heads={self.num_heads} must be a multiple of "
          f"num_key_value_heads={self.num_kv_heads}")
    if self.rope.rope_type not in SUPPORTED_ROPE_TYPES:
      raise ConfigError(
          f"rope_type={self.rope.rope_type!r} is not supported; expected one of "
          f"{SUPPORTED_ROPE_TYPES}")

  @property
  def num_params(self) -> int:
    """Parameter count (embedding counted once when tied)."""
    d, f, e = self.hidden_size, self.intermediate_size, self.head_dim
    h, k = self.num_heads, self.num_kv_heads
    attn = d * (h + 2 * k) * e + h * e * d
    attn += (h + 2 * k) * e * self.qkv_bias + d * self.o_bias + 2 * e * self.qk_norm
    mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
    per_layer = attn + mlp + 2 * d
    head = 0 if self.tie_word_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * per_layer + d + head

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    """The model's own end-of-sequence ids (`eos_token_id`: none, one or several)."""
    eos = self.eos_token_id
    return () if eos is None else tuple(eos) if isinstance(eos, tuple) else (eos,)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict (stored in checkpoint metadata); inverse of `from_dict`."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
    d = dict(d)
    d["rope"] = RopeConfig(**d.get("rope", {}))
    d["eos_token_id"] = _as_hashable(d.get("eos_token_id"))
    return cls(**d)

  # ----------------------------------------------------------------- HF I/O
  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "DecoderConfig":
    """Builds a config from the dict of a Hugging Face `config.json`."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(
          f"config.json: model_type={model_type!r} is not supported; "
          f"expected one of {SUPPORTED_MODEL_TYPES}")
    if hf.get("hidden_act", "silu") != "silu":
      raise ConfigError(f"config.json: hidden_act={hf['hidden_act']!r}; only 'silu' is supported")
    if hf.get("use_sliding_window", False):
      raise ConfigError("config.json: use_sliding_window=true is not supported; "
                        "set it to false (full attention in every layer)")
    sliding = [t for t in hf.get("layer_types") or () if t != "full_attention"]
    if sliding:
      raise ConfigError(f"config.json: layer_types has {len(sliding)} {sliding[0]!r} layers; "
                        "only full_attention is supported")
    for field in ("vocab_size", "hidden_size", "intermediate_size",
                  "num_hidden_layers", "num_attention_heads"):
      if field not in hf:
        raise ConfigError(f"config.json: required field {field!r} is missing")
    num_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
    attention_bias = bool(hf.get("attention_bias", False))
    return cls(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope=_rope_from_hf(hf),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=model_type == "qwen3",
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=False if model_type == "qwen2" else attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32_768),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=_as_hashable(hf.get("eos_token_id")),
        pad_token_id=hf.get("pad_token_id"),
    )

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike) -> "DecoderConfig":
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
      raise ConfigError(f"{config_path} not found: a Hugging Face model folder needs a config.json")
    with open(config_path) as f:
      try:
        hf = json.load(f)
      except json.JSONDecodeError as e:
        raise ConfigError(f"{config_path}: not valid JSON ({e})") from None
    return cls.from_hf_dict(hf)

  def to_hf_kwargs(self) -> dict[str, Any]:
    """Keyword arguments for the `transformers` config class of this family.

    Uses the transformers-4 names (`rope_theta`, `rope_scaling`), which
    transformers 5 still accepts and converts, so the written `config.json`
    is whatever the installed transformers considers canonical.
    """
    if self.model_type == "qwen2" and self.o_bias:
      raise ConfigError("qwen2 has no output-projection bias; o_bias must be False")
    if self.model_type == "qwen2" and not self.qkv_bias:
      raise ConfigError("qwen2 always has q/k/v biases; qkv_bias must be True")
    if self.model_type != "qwen2" and self.qkv_bias != self.o_bias:
      raise ConfigError(f"{self.model_type}: attention_bias covers q/k/v and o together; "
                        f"got qkv_bias={self.qkv_bias}, o_bias={self.o_bias}")
    kwargs = dict(
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_layers,
        num_attention_heads=self.num_heads,
        num_key_value_heads=self.num_kv_heads,
        head_dim=self.head_dim,
        rms_norm_eps=self.rms_norm_eps,
        rope_theta=self.rope.theta,
        tie_word_embeddings=self.tie_word_embeddings,
        max_position_embeddings=self.max_position_embeddings,
        hidden_act="silu",
        bos_token_id=self.bos_token_id,
        eos_token_id=list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
        else self.eos_token_id,
        pad_token_id=self.pad_token_id,
    )
    if self.model_type != "qwen2":
      kwargs["attention_bias"] = self.qkv_bias
    if self.model_type == "llama":
      kwargs["mlp_bias"] = self.mlp_bias
    if self.model_type in ("qwen2", "qwen3"):
      kwargs["use_sliding_window"] = False
    if self.rope.rope_type == "llama3":
      kwargs["rope_scaling"] = dict(
          rope_type="llama3",
          factor=self.rope.factor,
          low_freq_factor=self.rope.low_freq_factor,
          high_freq_factor=self.rope.high_freq_factor,
          original_max_position_embeddings=self.rope.original_max_position_embeddings,
      )
    return kwargs


def _as_hashable(value):
  return tuple(value) if isinstance(value, list) else value


def _rope_from_hf(hf: dict[str, Any]) -> RopeConfig:
  """Reads rope settings from either transformers-4 or -5 style configs."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = hf.get("rope_scaling") or {}
  params = {**scaling, **params}
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type not in SUPPORTED_ROPE_TYPES:
    raise ConfigError(f"config.json: rope_type={rope_type!r} is not supported; "
                      f"expected one of {SUPPORTED_ROPE_TYPES}")
  if rope_type == "default":
    return RopeConfig(theta=float(theta))
  missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings") if k not in params]
  if missing:
    raise ConfigError(f"config.json: llama3 rope scaling lacks {missing}")
  return RopeConfig(
      theta=float(theta),
      rope_type="llama3",
      factor=float(params["factor"]),
      low_freq_factor=float(params["low_freq_factor"]),
      high_freq_factor=float(params["high_freq_factor"]),
      original_max_position_embeddings=int(params["original_max_position_embeddings"]),
  )
