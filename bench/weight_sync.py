"""Weight sync cost: one disk sync (export + reload on N servers) against a raw safetensors
save + load of the same parameters, measured in one process on real `launch/serve.py` servers.

  python bench/weight_sync.py [--model=tiny|0.5b] [--servers=2] [--repeats=3] [--dir=/dev/shm]

Prints seconds for the raw save + load, for the export alone, for the reload on every
server, and the sync's ratio to raw (the fastest of `--repeats` each).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from absl import app, flags

flags.DEFINE_enum("model", "tiny", ["tiny", "0.5b"], "tiny: the offline default's shape; "
                  "0.5b: a random Qwen3 of ~0.5B parameters")
flags.DEFINE_integer("servers", 2, "rollout servers reloading each export")
flags.DEFINE_integer("repeats", 3, "timed repetitions; the fastest is reported")
flags.DEFINE_string("dir", None, "where the raw file and the exports are written (default: the "
                    "system's temporary folder; /dev/shm takes the disk's write-back out)")
FLAGS = flags.FLAGS

SHAPES = {
    "tiny": dict(vocab_size=1024, hidden_size=128, intermediate_size=384, num_layers=4,
                 num_heads=4, num_kv_heads=2, head_dim=32),
    "0.5b": dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_layers=24,
                 num_heads=14, num_kv_heads=2, head_dim=64),
}


def raw_seconds(model, folder: str) -> float:
  """safetensors save of every parameter (HF names) and a load back: the floor."""
  import numpy as np
  from flax import nnx
  from safetensors.numpy import load_file, save_file
  flat = {".".join(map(str, k)): np.asarray(v[...]) for k, v in
          nnx.to_flat_state(nnx.state(model, nnx.Param))}
  start = time.perf_counter()
  path = os.path.join(folder, "raw.safetensors")
  save_file(flat, path)
  load_file(path)
  seconds = time.perf_counter() - start
  os.remove(path)
  return seconds


async def sync_seconds(model, sync_dir: str, tokenizer_dir: str, log_dir: str
                       ) -> list[tuple[float, float]]:
  """(export s, reload s) of each repeat, on `--servers` launched servers."""
  from orchestra.engines.http_engine import HTTPEngine
  from orchestra.engines.server_pool import LocalServers, ServerSpec
  from orchestra.engines.weight_sync import export_policy
  path = export_policy(model, sync_dir, 0, tokenizer_dir, "float32")
  spec = ServerSpec("orchestra", "policy", log_dir, max_model_len=512, startup_timeout_s=900)
  with LocalServers(spec, FLAGS.servers) as servers:
    engine = HTTPEngine(servers.start(path), "policy", timeout_s=900)
    try:
      await engine.update_weights(path, 0)                     # warm: first reload compiles
      times = []
      for version in range(1, FLAGS.repeats + 1):
        start = time.perf_counter()
        path = export_policy(model, sync_dir, version, tokenizer_dir, "float32")
        exported = time.perf_counter()
        await engine.update_weights(path, version)
        times.append((exported - start, time.perf_counter() - exported))
      return times
    finally:
      await engine.aclose()


def main(argv):
  del argv
  from flax import nnx

  from orchestra.agent.tokenizer import train_tokenizer
  from orchestra.models import CausalLM, DecoderConfig
  cfg = DecoderConfig("qwen3", qk_norm=True, **SHAPES[FLAGS.model])
  model = CausalLM(cfg, rngs=nnx.Rngs(0))
  with tempfile.TemporaryDirectory(dir=FLAGS.dir) as root:
    tokenizer = train_tokenizer(["a tiny corpus for a tokenizer"] * 4, 300)
    tokenizer.save_pretrained(os.path.join(root, "tokenizer"))
    raw = min(raw_seconds(model, root) for _ in range(FLAGS.repeats))
    times = asyncio.run(sync_seconds(model, os.path.join(root, "sync"),
                                     os.path.join(root, "tokenizer"), os.path.join(root, "logs")))
  export, reload = min(t[0] for t in times), min(t[1] for t in times)
  total = min(a + b for a, b in times)
  print(f"model {FLAGS.model}: {cfg.num_params / 1e6:.1f}M parameters (float32), "
        f"{FLAGS.servers} servers")
  print(f"raw safetensors save + load   {raw:8.3f} s")
  print(f"sync: export                  {export:8.3f} s")
  print(f"sync: reload on all servers   {reload:8.3f} s")
  print(f"sync total                    {total:8.3f} s   ({total / raw:.2f}x raw)")


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the trainer that exports runs with this allocator
  app.run(main)
