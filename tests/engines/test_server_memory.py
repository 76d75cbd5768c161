"""A rollout server's host memory across weight reloads: one model resident between reloads,
measured on a real `launch/serve.py` process (Linux: RssAnon in /proc/<pid>/status)."""

import asyncio
import os

import pytest
from flax import nnx

from orchestra.agent.tokenizer import train_tokenizer
from orchestra.engines.http_engine import HTTPEngine
from orchestra.engines.server_pool import LocalServers, ServerSpec
from orchestra.engines.weight_sync import export_policy
from orchestra.models import CausalLM, DecoderConfig

# ~250 MB of float32 parameters: large against the server's own ~450 MB, small for CI.
CFG = DecoderConfig("qwen3", vocab_size=32_000, hidden_size=512, intermediate_size=2048,
                    num_layers=8, num_heads=8, num_kv_heads=2, head_dim=64, qk_norm=True)


def anonymous_mib(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) / 1024
  raise AssertionError("no RssAnon in /proc status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_reloads_keep_one_model_resident_not_one_per_reload(tmp_path):
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  model_mib = CFG.num_params * 4 / 2**20
  tokenizer = train_tokenizer(["a tiny corpus for a tokenizer"] * 4, 300)
  tokenizer.save_pretrained(tmp_path / "tokenizer")
  sync_dir, tokenizer_dir = str(tmp_path / "sync"), str(tmp_path / "tokenizer")
  spec = ServerSpec("orchestra", "policy", str(tmp_path / "logs"), max_model_len=256)

  async def reload_six_times(servers) -> tuple[float, float]:
    engine = HTTPEngine(servers.start(export_policy(model, sync_dir, 0, tokenizer_dir,
                                                    "float32")), "policy")
    pid = servers.servers[0].proc.pid
    try:
      at_start = anonymous_mib(pid)
      for version in range(1, 7):
        await engine.update_weights(
            export_policy(model, sync_dir, version, tokenizer_dir, "float32"), version)
      return at_start, anonymous_mib(pid)
    finally:
      await engine.aclose()

  with LocalServers(spec, 1) as servers:
    at_start, after_six = asyncio.run(reload_six_times(servers))
  # Measured: +4-9 MiB. Before, old models lingered until Python's cyclic GC and mimalloc's
  # purge delay let them go: +447 MiB here, and a 630M model's server reached 10-12 GB.
  assert after_six - at_start < 0.25 * model_mib, (at_start, after_six, model_mib)
