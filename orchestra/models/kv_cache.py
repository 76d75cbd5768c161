"""Key/value cache for incremental decoding.

The cache is a plain pytree (not NNX state) so a jitted decode step can take
it as an argument and donate it. All rows share one write index: a step with
T new tokens writes slots [index, index + T) of every row. Rows of different
lengths are left-padded; `mask_BS` marks the slots that hold real tokens and
`next_position_B` is each row's rotary position for its next real token, so
a padded row sees exactly the positions it would see unpadded.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from orchestra.models.config import DecoderConfig


@flax.struct.dataclass
class KVCache:
  keys: tuple[jax.Array, ...]      # per layer [B, K, S, E] (kv-head major: a decode step
  values: tuple[jax.Array, ...]    # per layer [B, K, S, E]  reads it without a transpose)
  mask_BS: jax.Array               # bool: slot s of row b holds a real token
  next_position_B: jax.Array       # int32: position id of row b's next real token
  index: jax.Array                 # int32 scalar: next slot to write (all rows)

  @classmethod
  def init(cls, config: DecoderConfig, batch_size: int, max_length: int,
           dtype=jnp.float32) -> "KVCache":
    """An empty cache able to hold `max_length` slots per row."""
    shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return cls(
        keys=zeros(),
        values=zeros(),
        mask_BS=jnp.zeros((batch_size, max_length), jnp.bool_),
        next_position_B=jnp.zeros((batch_size,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )

  @property
  def max_length(self) -> int:
    return self.mask_BS.shape[1]

  def positions_for(self, mask_BT: jax.Array) -> jax.Array:
    """Rotary positions of T new tokens: each row continues its own count."""
    return self.next_position_B[:, None] + jnp.maximum(jnp.cumsum(mask_BT, axis=1) - 1, 0)

  def advance(self, keys, values, mask_BT: jax.Array) -> "KVCache":
    """The cache after T new tokens (already written into `keys`/`values`)."""
    t = mask_BT.shape[1]
    return KVCache(
        keys=tuple(keys),
        values=tuple(values),
        mask_BS=self.key_mask(mask_BT),
        next_position_B=self.next_position_B + mask_BT.sum(axis=1).astype(jnp.int32),
        index=self.index + t,
    )

  def key_mask(self, mask_BT: jax.Array) -> jax.Array:
    """mask_BS with the T new tokens written at `index`."""
    return jax.lax.dynamic_update_slice(self.mask_BS, mask_BT.astype(jnp.bool_), (0, self.index))
