"""What storing the weights in Hugging Face's layout would cost the sampler and the learner.

  python bench/weight_layout.py [--round_s=0.25]

A disk sync transposes every matrix twice (our `[in, out]` kernels to HF's `[out, in]` at
export, back at reload). Keeping the kernels as `[out, in]` would make both a plain copy,
but every product becomes `x @ w.T`. This times one product `x_NI @ w` against the same
`x_NI @ w_OI.T` (a `dot_general` contracting both last axes) at the shapes of a random
~0.5B Qwen3 (D 896, F 4864) and of the offline default (D 128, F 384): a decode step
(8 rows, forward) and a training micro-batch (forward, and forward + backward). Prints
milliseconds per call (the fastest of 5 timed rounds) and the ratio HF / ours.
"""

from __future__ import annotations

import time

from absl import app, flags

flags.DEFINE_float("round_s", 0.25, "seconds per timed round (5 rounds, the fastest reported)")
FLAGS = flags.FLAGS

SHAPES = [  # (rows N, in I, out O, backward too): gate/up and down projections
    ("0.5b decode, gate/up", 8, 896, 4864, False),
    ("0.5b decode, down", 8, 4864, 896, False),
    ("0.5b train, gate/up", 512, 896, 4864, True),
    ("0.5b train, down", 512, 4864, 896, True),
    ("tiny decode, gate/up", 8, 128, 384, False),
    ("tiny train, gate/up", 4096, 128, 384, True),
]


def fastest_ms(fn, *args) -> float:
  import jax
  jax.block_until_ready(fn(*args))                                  # compiles
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  calls = max(1, int(FLAGS.round_s / (time.perf_counter() - start)))
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / calls * 1e3)
  return best


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  ours = lambda x_NI, w_IO: x_NI @ w_IO
  hf = lambda x_NI, w_OI: jax.lax.dot_general(x_NI, w_OI, (((1,), (1,)), ((), ())))
  grad = lambda f: jax.grad(lambda x, w: jnp.sum(jnp.tanh(f(x, w))), argnums=(0, 1))
  print(f"{'product':24s} {'pass':8s} {'ours [in,out]':>14s} {'HF [out,in]':>12s} {'HF/ours':>8s}")
  rng = np.random.default_rng(0)
  for name, n, i, o, backward in SHAPES:
    x_NI = jnp.asarray(rng.standard_normal((n, i), np.float32))
    w_IO = jnp.asarray(rng.standard_normal((i, o), np.float32))
    w_OI = jnp.asarray(np.ascontiguousarray(np.asarray(w_IO).T))
    passes = (("forward", lambda f: f),) + ((("fwd+bwd", grad),) if backward else ())
    for kind, wrap in passes:
      a = fastest_ms(jax.jit(wrap(ours)), x_NI, w_IO)
      b = fastest_ms(jax.jit(wrap(hf)), x_NI, w_OI)
      print(f"{name:24s} {kind:8s} {a:11.3f} ms {b:9.3f} ms {b / a:7.2f}x", flush=True)


if __name__ == "__main__":
  app.run(main)
