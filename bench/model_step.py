"""Forward+backward and KV-cache decode throughput: Orchestra (JAX) vs transformers (PyTorch).

Both run the same random tiny Qwen3 weights on the same inputs in one
process, so the printed ratios are comparable even on a noisy machine.

  python bench/model_step.py                      # the default ~1M-parameter model
  python bench/model_step.py --hidden_size=256 --num_layers=8
"""

from __future__ import annotations

import os
import tempfile

from absl import app, flags
from bench_timing import median_s

flags.DEFINE_integer("vocab_size", 1024, "vocabulary size")
flags.DEFINE_integer("hidden_size", 128, "model dim D")
flags.DEFINE_integer("intermediate_size", 384, "MLP hidden dim F")
flags.DEFINE_integer("num_layers", 4, "decoder blocks")
flags.DEFINE_integer("num_heads", 4, "query heads")
flags.DEFINE_integer("num_kv_heads", 2, "key/value heads")
flags.DEFINE_integer("head_dim", 32, "head dim E")
flags.DEFINE_integer("batch_size", 8, "rows per step")
flags.DEFINE_integer("seq_len", 256, "tokens per row for forward+backward")
flags.DEFINE_integer("prompt_len", 32, "prompt tokens per row for decoding")
flags.DEFINE_integer("new_tokens", 128, "generated tokens per row")
flags.DEFINE_integer("repeats", 5, "timed repetitions (the median is reported)")
FLAGS = flags.FLAGS


def fwd_bwd_seconds(model, torch_model, ids) -> tuple[float, float]:
  """Median seconds of one next-token cross-entropy forward+backward on `ids` (B x T):
  (orchestra's jitted value_and_grad, transformers' loss.backward())."""
  import jax
  import jax.numpy as jnp
  import torch
  from flax import nnx

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, ids_BT):
    logits = nnx.merge(graphdef, params, rest)(ids_BT)[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, ids_BT[:, 1:, None], axis=-1).mean()

  grad_fn = jax.jit(jax.value_and_grad(loss_fn))
  ids_jax = jnp.asarray(ids)
  jax_s = median_s(lambda: jax.block_until_ready(grad_fn(params, ids_jax)), FLAGS.repeats)
  torch_model.train()
  ids_torch = torch.tensor(ids, dtype=torch.long)

  def torch_step():
    torch_model.zero_grad(set_to_none=True)
    torch_model(ids_torch, labels=ids_torch).loss.backward()

  return jax_s, median_s(torch_step, FLAGS.repeats)


def decode_seconds(model, torch_model, prompt, n_new: int) -> tuple[float, float]:
  """Median seconds of greedy KV-cache decoding of `n_new` tokens after `prompt` (B x P):
  (orchestra's `generate`, transformers' `generate`)."""
  import jax
  import torch

  from orchestra.models.decoding import generate

  jax_s = median_s(
      lambda: jax.block_until_ready(generate(model, prompt, max_new_tokens=n_new)), FLAGS.repeats)
  torch_model.eval()
  prompt_torch = torch.tensor(prompt, dtype=torch.long)

  def torch_decode():
    with torch.no_grad():
      torch_model.generate(prompt_torch, attention_mask=torch.ones_like(prompt_torch),
                           max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                           pad_token_id=0)

  return jax_s, median_s(torch_decode, FLAGS.repeats)


def main(argv):
  del argv
  import jax
  import numpy as np
  import torch
  import transformers

  from orchestra.checkpoint import load_hf

  config = transformers.Qwen3Config(
      vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
      intermediate_size=FLAGS.intermediate_size, num_hidden_layers=FLAGS.num_layers,
      num_attention_heads=FLAGS.num_heads, num_key_value_heads=FLAGS.num_kv_heads,
      head_dim=FLAGS.head_dim, bos_token_id=None, eos_token_id=None, pad_token_id=None)
  torch.manual_seed(0)
  torch_model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
  with tempfile.TemporaryDirectory() as tmp:
    torch_model.save_pretrained(tmp)
    model = load_hf(tmp)
  rng = np.random.RandomState(0)
  b, t, n_new = FLAGS.batch_size, FLAGS.seq_len, FLAGS.new_tokens
  ids = rng.randint(0, FLAGS.vocab_size, (b, t)).astype(np.int32)
  jax_train, torch_train = fwd_bwd_seconds(model, torch_model, ids)
  prompt = rng.randint(0, FLAGS.vocab_size, (b, FLAGS.prompt_len)).astype(np.int32)
  jax_decode, torch_decode = decode_seconds(model, torch_model, prompt, n_new)

  train_tokens, decode_tokens = b * t, b * n_new
  print(f"model: Qwen3-shaped, {model.config.num_params / 1e6:.2f}M params (vocab "
        f"{FLAGS.vocab_size}, D {FLAGS.hidden_size}, {FLAGS.num_layers} layers); jax "
        f"{jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU cores {os.cpu_count()}")
  print(f"{'':30s}{'orchestra':>14s}{'transformers':>14s}{'ratio':>8s}")
  rows = [(f"fwd+bwd tokens/s ({b}x{t})", train_tokens / jax_train, train_tokens / torch_train),
          (f"decode tokens/s ({b}x{n_new})", decode_tokens / jax_decode,
           decode_tokens / torch_decode)]
  for name, ours, theirs in rows:
    print(f"{name:30s}{ours:14,.0f}{theirs:14,.0f}{ours / theirs:8.2f}x")


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  app.run(main)
