"""Activation memory of the training step at long context, from the compiled step itself.

Compiles (never runs) the gradient of the trainer's own loss (`policy_loss_fn`, its
defaults) with respect to the parameters, for a 2-layer model at Qwen3-8B width (hidden
4096, 32/8 heads, MLP 12288, vocab 151,936), float32 master parameters and bfloat16
compute as a training run holds them, one sequence of T tokens, and prints
`memory_analysis()`'s temporary bytes per T and the growth per doubling, for the
memory options given (the paper configs' by default) and for the dense path.

  python bench/long_context_memory.py [--lengths=4096,8192,16384] [--dense_lengths=4096,8192]
"""

from __future__ import annotations

from absl import app, flags

flags.DEFINE_list("lengths", ["4096", "8192", "16384"], "sequence lengths T")
flags.DEFINE_list("dense_lengths", ["4096", "8192"], "lengths for the dense reference row "
                  "(empty: none)")
flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "MemoryOptions.remat")
flags.DEFINE_integer("logits_chunk", 1024, "MemoryOptions.logits_chunk")
flags.DEFINE_integer("num_layers", 2, "layers at Qwen3-8B width")
FLAGS = flags.FLAGS

GIB = 2 ** 30


def temp_bytes(memory, t: int) -> int:
  import jax.numpy as jnp

  from orchestra.models import DecoderConfig
  from orchestra.rl.update import PolicyLossConfig
  from orchestra.train.activation_plan import step_temp_bytes
  cfg = DecoderConfig("qwen3", vocab_size=151_936, hidden_size=4096, intermediate_size=12_288,
                      num_layers=FLAGS.num_layers, num_heads=32, num_kv_heads=8, head_dim=128,
                      qk_norm=True)
  return step_temp_bytes(cfg, memory, jnp.bfloat16, PolicyLossConfig(), rows=1, tokens=t)


def row(name: str, memory, lengths: list[int]) -> str:
  sizes = [temp_bytes(memory, t) for t in lengths]
  cells = [f"T={t}: {s / GIB:6.2f} GiB" for t, s in zip(lengths, sizes)]
  growth = [f"x{b / a:.2f}" for a, b in zip(sizes, sizes[1:])]
  return f"{name:<40} " + "  ".join(cells) + ("   per doubling " + " ".join(growth)
                                                 if growth else "")


def main(argv):
  del argv
  from orchestra.models import MemoryOptions
  print(f"temporary bytes of the compiled policy-loss gradient, {FLAGS.num_layers} layers at "
        "Qwen3-8B width, bf16 compute, batch 1")
  memory = MemoryOptions(FLAGS.remat, "blockwise", FLAGS.logits_chunk)
  print(row(f"blockwise, remat={FLAGS.remat}, chunk={FLAGS.logits_chunk}", memory,
            [int(t) for t in FLAGS.lengths]), flush=True)
  if FLAGS.dense_lengths:
    print(row(f"dense, remat={FLAGS.remat}, whole logits", MemoryOptions(FLAGS.remat, "dense",
                                                                         1 << 30),
              [int(t) for t in FLAGS.dense_lengths]))


if __name__ == "__main__":
  app.run(main)
