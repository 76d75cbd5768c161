"""Flax NNX causal decoders for the Qwen3, Qwen2 and Llama 3 families.

Shape suffixes: B batch, T new tokens, S key slots, D model dim, H query
heads, K key/value heads, G = H / K query heads per kv head, E head dim,
F MLP hidden dim, V vocabulary.

Every parameter carries `logical_axes` metadata (one name per dimension);
`orchestra.sharding` maps those names to mesh axes. Weights are stored in
JAX layout ([in, ..., out]); `orchestra.checkpoint.hf` converts to and from
the Hugging Face layout.

Dtype policy: `param_dtype` is the storage dtype of the parameters,
`dtype` the compute dtype of activations and matmuls. RMSNorm statistics,
attention softmax and the output logits are always float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from orchestra.models.blockwise_attention import attend_blockwise, attend_cache_blockwise
from orchestra.models.dense_attention import attend_cache_dense, attend_kv_major
from orchestra.models.fused_attention import attend_fused
from orchestra.models.config import DecoderConfig, MemoryOptions
from orchestra.models.kv_cache import KEY_SLOT_AXIS, KVCache
from orchestra.models.rope import apply_rope, inverse_frequencies, rope_cos_sin
from orchestra.models.shared_prefix import shared_prefix_hidden
from orchestra.models.token_stats import token_stats

_INIT_STD = 0.02  # matches transformers' initializer_range


def _param(rngs: nnx.Rngs, shape, axes, dtype, init: str = "normal") -> nnx.Param:
  if init == "normal":
    value = _INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)
  elif init == "ones":
    value = jnp.ones(shape, jnp.float32)
  else:
    value = jnp.zeros(shape, jnp.float32)
  return nnx.Param(value.astype(dtype), logical_axes=axes)


def token_matmul(x_BTI, w_IO, accumulate=None):
  """x @ w over the last axis, with x's leading axes merged into one token axis first.

  As einsums over [B, T, ...] activations and multi-axis weights, the weight gradients
  contract two axes (b, t) and the output projection two more (heads, head dim); XLA:CPU
  runs those dots far slower than the same products on [N, I] x [I, O] (measured on 2
  cores, 32 x 128 tokens: the LM head (D 128, V 1024) with its log-softmax, fwd+bwd,
  30 ms as an einsum vs 12 ms flat; the anchors' 4-layer model, fwd+bwd 0.34 / 0.30 s
  -> 0.27 / 0.24 s in two runs each).
  `accumulate` is `preferred_element_type` (float32 logits from bfloat16 weights).
  """
  y_NO = jnp.matmul(x_BTI.reshape(-1, x_BTI.shape[-1]), w_IO, preferred_element_type=accumulate)
  return y_NO.reshape(*x_BTI.shape[:-1], w_IO.shape[-1])


class RMSNorm(nnx.Module):
  """y = scale * x / sqrt(mean(x^2) + eps), statistics in float32."""

  def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = _param(rngs, (dim,), ("norm",), param_dtype, init="ones")

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * x32.astype(x.dtype)


def attend(q_BTHE, k_BSKE, v_BSKE, mask_BTS):
  """Grouped-query softmax attention over keys/values in token-major layout [B, S, K, E]
  (fresh projections): `attend_kv_major` after moving the kv-head axis forward."""
  return attend_kv_major(q_BTHE, k_BSKE.transpose(0, 2, 1, 3), v_BSKE.transpose(0, 2, 1, 3),
                         mask_BTS)


DENSE_SCORES_MAX_BYTES = 2**24


def attend_cache(q_BTHE, k_BKES, v_BKSE, mask_BTS, blockwise: bool = True):
  """Attention of T new tokens over a KV cache (`KVCache`'s layout: keys [B, K, E, S],
  values [B, K, S, E]): `attend_cache_dense`, or, when `blockwise`, T > 1 (a prefill
  after a long cached prefix, not a decode step) and its float32 scores [B, H, T, S] would
  pass `DENSE_SCORES_MAX_BYTES`, `attend_cache_blockwise`, which gets the same result in
  key blocks that stay in the CPU's cache (3.7x faster at 8 x 448 tokens over 3.6k slots;
  a decode step is faster dense). The blockwise path is forward only: a differentiated
  pass sets `blockwise=False`."""
  b, t, h, _ = q_BTHE.shape
  if blockwise and t > 1 and 4 * b * h * t * k_BKES.shape[KEY_SLOT_AXIS] > DENSE_SCORES_MAX_BYTES:
    return attend_cache_blockwise(q_BTHE, k_BKES, v_BKSE, mask_BTS)
  return attend_cache_dense(q_BTHE, k_BKES, v_BKSE, mask_BTS)


class Attention(nnx.Module):
  """Multi-head attention with GQA, RoPE, optional q/k RMSNorm and biases. `kernel`
  (`MemoryOptions.attention`) picks the causal path without a KV cache."""

  def __init__(self, cfg: DecoderConfig, *, param_dtype, dtype, rngs: nnx.Rngs,
               kernel: str = "dense"):
    d, h, k, e = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.dtype, self.kernel = dtype, kernel
    self.q_proj = _param(rngs, (d, h, e), ("embed", "heads", "head_dim"), param_dtype)
    self.k_proj = _param(rngs, (d, k, e), ("embed", "kv_heads", "head_dim"), param_dtype)
    self.v_proj = _param(rngs, (d, k, e), ("embed", "kv_heads", "head_dim"), param_dtype)
    self.o_proj = _param(rngs, (h, e, d), ("heads", "head_dim", "embed"), param_dtype)
    if cfg.qkv_bias:
      self.q_bias = _param(rngs, (h, e), ("heads", "head_dim"), param_dtype, init="zeros")
      self.k_bias = _param(rngs, (k, e), ("kv_heads", "head_dim"), param_dtype, init="zeros")
      self.v_bias = _param(rngs, (k, e), ("kv_heads", "head_dim"), param_dtype, init="zeros")
    if cfg.o_bias:
      self.o_bias = _param(rngs, (d,), ("embed",), param_dtype, init="zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm(e, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
      self.k_norm = RMSNorm(e, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

  def _project(self, x_BTD, name: str):
    w_DNE = getattr(self, f"{name}_proj")[...].astype(self.dtype)
    d, n, e = w_DNE.shape
    y = token_matmul(x_BTD, w_DNE.reshape(d, n * e)).reshape(*x_BTD.shape[:-1], n, e)
    bias = getattr(self, f"{name}_bias", None)
    return y if bias is None else y + bias[...].astype(self.dtype)

  def __call__(self, x_BTD, cos_BTE, sin_BTE, mask, cached_kv=None, index=None,
               cache_blockwise: bool = True):
    """Returns the attention output [B, T, D] and the (keys, values) attended to.

    With `cached_kv=(k_BKES, v_BKSE)` (the cache's layout) the new keys/values are
    written at slot `index` and attention runs over all S slots (`attend_cache`, which may
    go blockwise when `cache_blockwise`); otherwise over the T new tokens.
    `mask` is [B, T, S] (visible keys of each query: `attend`), or the [B, T] key mask
    of causal attention over the T new tokens (`self.kernel`: `attend_blockwise`, or
    `attend_fused` for right-padded rows).
    """
    q_BTHE = self._project(x_BTD, "q")
    k_BTKE = self._project(x_BTD, "k")
    v_BTKE = self._project(x_BTD, "v")
    if hasattr(self, "q_norm"):
      q_BTHE, k_BTKE = self.q_norm(q_BTHE), self.k_norm(k_BTKE)
    q_BTHE = apply_rope(q_BTHE, cos_BTE, sin_BTE)
    k_BTKE = apply_rope(k_BTKE, cos_BTE, sin_BTE)
    if cached_kv is None:
      keys, values = k_BTKE, v_BTKE
      if mask.ndim == 2:
        causal = attend_fused if self.kernel == "fused" else attend_blockwise
        out_BTHE = causal(q_BTHE, keys.astype(self.dtype), values.astype(self.dtype), mask)
      else:
        out_BTHE = attend(q_BTHE, keys.astype(self.dtype), values.astype(self.dtype), mask)
    else:
      cache_k, cache_v = cached_kv                          # [B, K, E, S], [B, K, S, E]
      keys = jax.lax.dynamic_update_slice(
          cache_k, k_BTKE.transpose(0, 2, 3, 1).astype(cache_k.dtype), (0, 0, 0, index))
      values = jax.lax.dynamic_update_slice(
          cache_v, v_BTKE.transpose(0, 2, 1, 3).astype(cache_v.dtype), (0, 0, index, 0))
      out_BTHE = attend_cache(q_BTHE, keys.astype(self.dtype), values.astype(self.dtype), mask,
                              cache_blockwise)
    b, t, h, e = out_BTHE.shape
    out_BTD = token_matmul(out_BTHE.reshape(b, t, h * e),
                           self.o_proj[...].astype(self.dtype).reshape(h * e, -1))
    if hasattr(self, "o_bias"):
      out_BTD = out_BTD + self.o_bias[...].astype(self.dtype)
    return out_BTD, (keys, values)


class MLP(nnx.Module):
  """SwiGLU: down(silu(x W_gate) * (x W_up))."""

  def __init__(self, cfg: DecoderConfig, *, param_dtype, dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.dtype = dtype
    self.gate_proj = _param(rngs, (d, f), ("embed", "mlp"), param_dtype)
    self.up_proj = _param(rngs, (d, f), ("embed", "mlp"), param_dtype)
    self.down_proj = _param(rngs, (f, d), ("mlp", "embed"), param_dtype)
    if cfg.mlp_bias:
      self.gate_bias = _param(rngs, (f,), ("mlp",), param_dtype, init="zeros")
      self.up_bias = _param(rngs, (f,), ("mlp",), param_dtype, init="zeros")
      self.down_bias = _param(rngs, (d,), ("embed",), param_dtype, init="zeros")

  def _dense(self, x_NI, name: str):
    y = x_NI @ getattr(self, f"{name}_proj")[...].astype(self.dtype)
    bias = getattr(self, f"{name}_bias", None)
    return y if bias is None else y + bias[...].astype(self.dtype)

  def __call__(self, x_BTD):
    # Tokens on one axis for the whole MLP (`token_matmul`'s reason); the gate's product
    # on [B, T, F] between reshapes instead made the forward pass 1.5x slower on XLA:CPU.
    x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
    h_NF = jax.nn.silu(self._dense(x_ND, "gate")) * self._dense(x_ND, "up")
    return self._dense(h_NF, "down").reshape(x_BTD.shape)


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: DecoderConfig, *, param_dtype, dtype, rngs: nnx.Rngs,
               attention: str = "dense"):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
    self.attn = Attention(cfg, dtype=dtype, kernel=attention, **kw)
    self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
    self.mlp = MLP(cfg, dtype=dtype, **kw)

  def __call__(self, x_BTD, cos_BTE, sin_BTE, mask, cached_kv=None, index=None,
               cache_blockwise: bool = True):
    attn_BTD, kv = self.attn(self.input_norm(x_BTD), cos_BTE, sin_BTE, mask, cached_kv, index,
                             cache_blockwise)
    x_BTD = x_BTD + attn_BTD
    x_BTD = x_BTD + self.mlp(self.post_attn_norm(x_BTD))
    return x_BTD, kv


# Gradient checkpointing of each block (`Transformer._scan_blocks`): "full" recomputes all
# of its activations in the backward pass, "dots" keeps the matmul outputs (no batch dims)
# and recomputes the rest.
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Transformer(nnx.Module):
  """Token embedding, the blocks and the final norm: ids -> hidden states."""

  def __init__(self, cfg: DecoderConfig, *, param_dtype=jnp.float32, dtype=jnp.float32,
               memory: MemoryOptions = MemoryOptions(), rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = dtype
    self.remat, self.attention = memory.remat, memory.attention
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype)
    self.layers = nnx.List([Block(cfg, param_dtype=param_dtype, dtype=dtype, rngs=rngs,
                                  attention=memory.attention)
                            for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, input_ids_BT, attention_mask_BT=None, positions_BT=None,
               cache: KVCache | None = None, cache_blockwise: bool = True):
    """Hidden states [B, T, D] (and the updated cache when one is given).

    Without a cache, attention is causal over the T tokens and restricted to
    `attention_mask_BT` (1 = real token; left or right padding); positions
    default to the running count of real tokens, so padding never shifts them.
    `attention="blockwise"` then never builds [T, T] arrays (`attend_blockwise`), nor
    does "fused" on GPUs (`attend_fused`: right padding only, as training batches are).
    With a cache, the T tokens are appended at `cache.index` and attend to
    every real token before them (`attend_cache`; `cache_blockwise=False` keeps that
    dense, for a pass that is differentiated).
    """
    b, t = input_ids_BT.shape
    if attention_mask_BT is None:
      attention_mask_BT = jnp.ones((b, t), jnp.bool_)
    attention_mask_BT = attention_mask_BT.astype(jnp.bool_)
    if cache is None:
      if positions_BT is None:
        positions_BT = jnp.maximum(jnp.cumsum(attention_mask_BT, axis=1) - 1, 0)
      key_mask_BS = attention_mask_BT
      query_slot_T = jnp.arange(t)
    else:
      if positions_BT is None:
        positions_BT = cache.positions_for(attention_mask_BT)
      key_mask_BS = cache.key_mask(attention_mask_BT)
      query_slot_T = cache.index + jnp.arange(t)
    if cache is None and self.attention != "dense":
      mask = key_mask_BS
    else:
      key_slot_S = jnp.arange(key_mask_BS.shape[1])
      causal_TS = key_slot_S[None, :] <= query_slot_T[:, None]
      mask = key_mask_BS[:, None, :] & causal_TS[None]

    x_BTD = jnp.take(self.embed[...], input_ids_BT, axis=0).astype(self.dtype)
    inv_freq = inverse_frequencies(self.config.rope, self.config.head_dim)
    cos_BTE, sin_BTE = rope_cos_sin(positions_BT, inv_freq, self.dtype)
    if cache is None and self.remat != "none":
      return self.final_norm(self._scan_blocks(x_BTD, cos_BTE, sin_BTE, mask)), None
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      cached_kv = None if cache is None else (cache.keys[i], cache.values[i])
      index = None if cache is None else cache.index
      x_BTD, (k, v) = layer(x_BTD, cos_BTE, sin_BTE, mask, cached_kv, index, cache_blockwise)
      new_keys.append(k)
      new_values.append(v)
    hidden_BTD = self.final_norm(x_BTD)
    if cache is None:
      return hidden_BTD, None
    return hidden_BTD, cache.advance(new_keys, new_values, attention_mask_BT)

  def _scan_blocks(self, x_BTD, cos_BTE, sin_BTE, mask):
    """The blocks as one `lax.scan` over their stacked states, each step rematerialised
    with `REMAT_POLICIES[self.remat]`.

    Remat in an unrolled loop of layers saves nothing on XLA's CPU backend: the recomputed
    activations of every layer are scheduled together (a 2-layer step at 16k tokens and
    Qwen3-8B width grew 4.1 GiB per layer with or without remat). A scan runs the backward
    one layer at a time. The stacked copy of the layers' parameters costs their size once.
    """
    graphdef, _ = nnx.split(self.layers[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.state(b) for b in self.layers))

    def step(x_BTD, state):
      return nnx.merge(graphdef, state)(x_BTD, cos_BTE, sin_BTE, mask)[0], None

    step = jax.checkpoint(step, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    return jax.lax.scan(step, x_BTD, stacked)[0]


class CausalLM(nnx.Module):
  """Decoder with a language-model head: ids -> float32 logits [B, T, V].

  `memory` (`MemoryOptions`): remat, blockwise attention and the logits chunk of
  `token_stats`; none of them changes a result.
  """

  def __init__(self, cfg: DecoderConfig, *, param_dtype=jnp.float32, dtype=jnp.float32,
               memory: MemoryOptions = MemoryOptions(), rngs: nnx.Rngs):
    self.config = cfg
    self.model = Transformer(cfg, param_dtype=param_dtype, dtype=dtype, memory=memory, rngs=rngs)
    self.logits_chunk = memory.logits_chunk
    if not cfg.tie_word_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), param_dtype)

  def logits(self, hidden_BTD):
    """hidden @ W_out in the compute dtype, accumulated and returned in float32."""
    dtype = hidden_BTD.dtype
    if self.config.tie_word_embeddings:
      w_DV = self.model.embed[...].astype(dtype).T
    else:
      w_DV = self.lm_head[...].astype(dtype)
    return token_matmul(hidden_BTD, w_DV, jnp.float32)

  def __call__(self, input_ids_BT, attention_mask_BT=None, positions_BT=None):
    """Logits [B, T, V] of a full (left- or right-padded) batch."""
    hidden_BTD, _ = self.model(input_ids_BT, attention_mask_BT, positions_BT)
    return self.logits(hidden_BTD)

  @property
  def shares_prefixes(self) -> bool:
    """Whether `token_stats` takes `shared_rows`: with the default memory options (its
    cached forward pass has no remat and no blockwise or fused kernel)."""
    return self.model.remat == "none" and self.model.attention == "dense"

  def token_stats(self, input_ids_BT, attention_mask_BT=None, temperature: float = 1.0,
                  first_token: int = 1, shared_rows=None):
    """(logp_BT, entropy_BT) of every token from `first_token` on (0 before it) given the
    ones before it, `logits_chunk` positions at a time (`orchestra.models.token_stats`):
    never the whole [T, V] logits, and no logits at all before `first_token`.

    `shared_rows=(first_U, source_B)`: rows whose first `first_token` tokens are equal run
    them once (`orchestra.models.shared_prefix`; needs `shares_prefixes`)."""
    if attention_mask_BT is None:
      attention_mask_BT = jnp.ones(input_ids_BT.shape, jnp.bool_)
    if shared_rows is None:
      hidden_BTD, _ = self.model(input_ids_BT, attention_mask_BT)
    else:
      if not self.shares_prefixes:
        raise ValueError("shared_rows needs the default memory options (remat 'none', "
                         f"dense attention), not {self.model.remat!r} / {self.model.attention!r}")
      hidden_BTD = shared_prefix_hidden(self.model, input_ids_BT, attention_mask_BT,
                                        first_token, *shared_rows)
    return token_stats(hidden_BTD, input_ids_BT, self.logits, temperature, self.logits_chunk,
                       first_token)

  def forward_with_cache(self, input_ids_BT, cache: KVCache, attention_mask_BT=None):
    """(logits [B, T, V], cache) for T new tokens appended to the cache."""
    hidden_BTD, cache = self.model(input_ids_BT, attention_mask_BT, cache=cache)
    return self.logits(hidden_BTD), cache

  def next_token_logits(self, input_ids_BT, cache: KVCache, attention_mask_BT=None):
    """(logits [B, V] after the last of T new tokens, cache): `forward_with_cache` with the
    LM head on the last position only (a prefill of T tokens needs one row of logits, not
    T: the head is ~8% of a 4-layer, 256-wide model's FLOPs per token at V 1024)."""
    hidden_BTD, cache = self.model(input_ids_BT, attention_mask_BT, cache=cache)
    return self.logits(hidden_BTD[:, -1]), cache


class ValueModel(nnx.Module):
  """Same backbone with a scalar head, for PPO: ids -> values [B, T] (float32).

  `values[:, t]` is V of the state *before* token t: it reads the hidden state at
  t - 1 (which has seen tokens 0..t-1 only), so it never depends on token t or any
  token after it, and the critic judges an action before seeing it (verl takes
  `values[:, -response_length - 1:-1]` for the same reason):

      values[:, t] = w . h[:, t - 1] + b    (t >= 1),        values[:, 0] = b

  Position 0 (no state yet) gets the learned bias alone; it is always a prompt
  token, so it never enters GAE or the value loss.
  """

  def __init__(self, cfg: DecoderConfig, *, param_dtype=jnp.float32, dtype=jnp.float32,
               memory: MemoryOptions = MemoryOptions(), rngs: nnx.Rngs):
    self.config = cfg
    self.model = Transformer(cfg, param_dtype=param_dtype, dtype=dtype, memory=memory, rngs=rngs)
    self.value_head = _param(rngs, (cfg.hidden_size,), ("embed",), param_dtype, init="zeros")
    self.value_bias = _param(rngs, (), (), param_dtype, init="zeros")

  def __call__(self, input_ids_BT, attention_mask_BT=None, positions_BT=None):
    hidden_BTD, _ = self.model(input_ids_BT, attention_mask_BT, positions_BT)
    after_BT = jnp.einsum("btd,d->bt", hidden_BTD, self.value_head[...].astype(hidden_BTD.dtype),
                          preferred_element_type=jnp.float32)
    before_BT = jnp.pad(after_BT[:, :-1], ((0, 0), (1, 0)))      # shift right: state before t
    return before_BT + self.value_bias[...].astype(jnp.float32)
