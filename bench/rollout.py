"""Rollout-loop overhead and sampler speed on a tiny random Qwen3 (CPU).

Prints, from one process:
  1. episodes/s and generated tokens/s of `run_episodes` (parse, tools, observation
     tokenisation, bookkeeping) versus replaying the very same generation requests
     on the bare engine -- the loop's overhead as a ratio;
  2. JAX sampler decode tokens/s versus transformers `generate` on the same weights;
  3. the HTTP path: the same `--http_requests` x `--http_tokens` completions in process
     (`JaxEngine`) and through `HTTPEngine` over one and over two `launch/serve.py`
     servers on the exported weights, and one weight reload;
  4. the multi-turn probe: `JaxEngine` with and without its prefix cache on 8 concurrent
     episodes x 8 turns of a 4-layer, 256-wide Qwen3, each turn appending 32 generated and
     384 observation tokens (context 256 -> ~3.5k): per-turn latency and the total;
  5. continuous batching: 64 requests of mixed lengths (16-256 tokens) on 16 slots, and 32
     agent-like episodes (4 turns, a random tool wait between turns), with `JaxEngine`'s
     continuous refill and with static batching (`refill=False`).

  python bench/rollout.py [--episodes=32 --max_turns=3 --turn_tokens=48]
  python bench/rollout.py --sections=multiturn,continuous
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import replace as dataclass_replace

from absl import app, flags
from bench_timing import fastest_s, median_s, steady_s

flags.DEFINE_integer("episodes", 32, "episodes per rollout")
flags.DEFINE_integer("max_turns", 3, "turns per episode")
flags.DEFINE_integer("turn_tokens", 48, "max tokens per policy turn")
flags.DEFINE_integer("vocab_size", 1024, "tokenizer / model vocabulary")
flags.DEFINE_integer("decode_batch", 8, "batch for the sampler-vs-transformers comparison")
flags.DEFINE_integer("decode_tokens", 128, "new tokens for the sampler-vs-transformers comparison")
flags.DEFINE_integer("repeats", 4, "timed repetitions; the fastest is reported (steady state: "
                     "every batch shape compiled)")
flags.DEFINE_integer("http_requests", 64, "concurrent completions for the HTTP comparison")
flags.DEFINE_integer("http_tokens", 48, "tokens per completion for the HTTP comparison")
flags.DEFINE_list("sections", ["loop", "http", "multiturn", "continuous"],
                  "what to measure: loop (1 and 2), http (3), multiturn (4), continuous (5)")
FLAGS = flags.FLAGS

TEXTS = ["You are good at using tools. Answer with the answer tool.",
         "Question: what is the population of Veloria times three?",
         '<tool_call>\n{"name": "answer", "arguments": {"answer": "42"}}\n</tool_call>'] * 50


class RecordingEngine:
  """Wraps an engine and records every request, to replay them on the bare engine."""

  def __init__(self, engine):
    self.engine, self.requests = engine, []

  @property
  def weight_version(self):
    return self.engine.weight_version

  async def generate(self, prompt_ids, sampling):
    self.requests.append((list(prompt_ids), sampling))
    return await self.engine.generate(prompt_ids, sampling)


def main(argv):
  del argv
  if "loop" in FLAGS.sections or "http" in FLAGS.sections:
    loop_and_http()
  if "multiturn" in FLAGS.sections:
    print("\n".join(multi_turn_probe()))
  if "continuous" in FLAGS.sections:
    print("\n".join(continuous_batching_probe()))


def loop_and_http():
  """Sections 1-3 (see the module docstring)."""
  from flax import nnx

  from orchestra.agent.tokenizer import train_tokenizer
  from orchestra.models import CausalLM, DecoderConfig

  tokenizer = train_tokenizer(TEXTS, FLAGS.vocab_size)
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384,
                      num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, qk_norm=True)
  model = CausalLM(cfg, rngs=nnx.Rngs(0))
  print(f"model: {cfg.num_params / 1e6:.2f}M params, vocab {cfg.vocab_size}; "
        f"{FLAGS.episodes} episodes x <= {FLAGS.max_turns} turns x <= {FLAGS.turn_tokens} tokens")
  print("\n".join(loop_overhead(model, tokenizer)))
  print(decode_vs_transformers(model))
  if "http" in FLAGS.sections:
    print("\n".join(http_overhead(model, tokenizer)))


def loop_overhead(model, tokenizer) -> list[str]:
  """Section 1: `run_episodes` against replaying its own requests on the bare engine, wave by
  wave (turn k of every episode together)."""
  from orchestra.agent import EpisodeConfig, run_episodes
  from orchestra.engines import JaxEngine, SamplingParams
  from orchestra.tools import build_tool

  tools = {"answer": build_tool({"type": "answer"})}
  messages = [{"role": "system", "content": TEXTS[0]}, {"role": "user", "content": TEXTS[1]}]
  sampling = SamplingParams(max_tokens=FLAGS.turn_tokens, temperature=1.0)
  config = EpisodeConfig(max_turns=FLAGS.max_turns, max_total_tokens=4096)
  engine = JaxEngine(model)
  loop_s = float("inf")
  for _ in range(FLAGS.repeats):              # same seeds, same requests; batch splits vary
    recorder = RecordingEngine(engine)
    start = time.perf_counter()
    trajs = asyncio.run(run_episodes(recorder, tokenizer, tools, [messages] * FLAGS.episodes,
                                     sampling, config, seed=0))
    loop_s = min(loop_s, time.perf_counter() - start)
  generated = sum(sum(t.loss_mask) for t in trajs)

  im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
  waves: dict[int, list] = {}
  for prompt, params in recorder.requests:
    waves.setdefault(prompt.count(im_start), []).append((prompt, params))

  async def replay():
    for _, wave in sorted(waves.items()):
      await asyncio.gather(*(engine.generate(p, params) for p, params in wave))

  bare_s = fastest_s(lambda: asyncio.run(replay()), FLAGS.repeats)
  return [f"rollout loop : {FLAGS.episodes / loop_s:8.2f} episodes/s "
          f"{generated / loop_s:10,.0f} generated tokens/s ({loop_s:.2f} s, "
          f"{len(recorder.requests)} requests)",
          f"bare engine  : {FLAGS.episodes / bare_s:8.2f} episodes/s "
          f"{generated / bare_s:10,.0f} generated tokens/s ({bare_s:.2f} s, same requests)",
          f"loop overhead: {loop_s / bare_s:.2f}x the bare engine's time"]


def decode_vs_transformers(model) -> str:
  """Section 2: greedy decode tokens/s of the JAX sampler and of transformers `generate` on
  the same weights (median of 3 after a warm-up)."""
  import jax
  import numpy as np
  import torch
  import transformers

  from orchestra.checkpoint import load_hf, save_hf
  from orchestra.models.decoding import generate

  with tempfile.TemporaryDirectory() as tmp:
    save_hf(model, tmp)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    same = load_hf(tmp)
  b, n = FLAGS.decode_batch, FLAGS.decode_tokens
  prompt = np.random.RandomState(0).randint(1, model.config.vocab_size, (b, 32)).astype(np.int32)
  jax_s = median_s(lambda: jax.block_until_ready(generate(same, prompt, max_new_tokens=n)))
  p = torch.tensor(prompt, dtype=torch.long)
  with torch.no_grad():
    hf_s = median_s(lambda: hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=n,
                                        min_new_tokens=n, do_sample=False, pad_token_id=0))
  return (f"decode {b}x{n}: orchestra {b * n / jax_s:,.0f} tokens/s, transformers "
          f"{b * n / hf_s:,.0f} tokens/s, ratio {hf_s / jax_s:.2f}x")


def http_overhead(model, tokenizer) -> list[str]:
  """Seconds for the same completions in process and over 1 and 2 servers (fastest of
  `--repeats`, after a warm-up that compiles every shape), and for one reload."""
  import numpy as np

  from orchestra.engines import JaxEngine, SamplingParams
  from orchestra.engines.http_engine import HTTPEngine
  from orchestra.engines.server_pool import LocalServers, ServerSpec
  from orchestra.engines.weight_sync import export_policy

  rng = np.random.RandomState(0)
  prompts = [rng.randint(1, model.config.vocab_size, 40).tolist()
             for _ in range(FLAGS.http_requests)]
  sampling = SamplingParams(max_tokens=FLAGS.http_tokens, temperature=1.0)

  async def wave(engine):
    jobs = [engine.generate(p, dataclass_replace(sampling, seed=i)) for i, p in enumerate(prompts)]
    start = time.perf_counter()
    await asyncio.gather(*jobs)
    return time.perf_counter() - start

  async def fastest(engine):
    await wave(engine)
    return min([await wave(engine) for _ in range(FLAGS.repeats)])

  lines = [f"HTTP: {FLAGS.http_requests} completions x {FLAGS.http_tokens} tokens"]
  local = asyncio.run(fastest(JaxEngine(model)))
  lines.append(f"  in process (JaxEngine)  {local:6.2f} s")
  with tempfile.TemporaryDirectory() as root:
    tokenizer.save_pretrained(os.path.join(root, "tokenizer"))
    path = export_policy(model, os.path.join(root, "sync"), 0, os.path.join(root, "tokenizer"),
                         "float32")
    for n in (1, 2):
      spec = ServerSpec("orchestra", "policy", os.path.join(root, f"logs{n}"))
      with LocalServers(spec, n) as servers:
        urls = servers.start(path)

        async def over_http():
          engine = HTTPEngine(urls, "policy")
          try:
            seconds = await fastest(engine)
            start = time.perf_counter()
            await engine.update_weights(path, 1)
            return seconds, time.perf_counter() - start
          finally:
            await engine.aclose()

        seconds, reload_s = asyncio.run(over_http())
      lines.append(f"  over {n} server(s)       {seconds:6.2f} s ({seconds / local:.2f}x in "
                   f"process); one reload {reload_s:.2f} s")
  return lines


def multi_turn_probe(episodes: int = 8, turns: int = 8, first: int = 256, generated: int = 32,
                     observation: int = 384) -> list[str]:
  """Per-turn latency and total time of growing conversations, with and without the prefix
  cache, on one model and the same seeds (a warm-up pass compiles every shape first)."""
  import numpy as np
  from flax import nnx

  from orchestra.engines import JaxEngine, SamplingParams
  from orchestra.models import CausalLM, DecoderConfig

  cfg = DecoderConfig("qwen3", vocab_size=1024, hidden_size=256, intermediate_size=768,
                      num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, qk_norm=True)
  model = CausalLM(cfg, rngs=nnx.Rngs(0))

  async def conversation_wave(engine):
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, 1024, first).tolist() for _ in range(episodes)]
    latencies = []
    for turn in range(turns):
      start = time.perf_counter()
      outs = await asyncio.gather(*(
          engine.generate(p, SamplingParams(max_tokens=generated, temperature=1.0,
                                            seed=1000 * i + turn))
          for i, p in enumerate(prompts)))
      latencies.append(time.perf_counter() - start)
      prompts = [p + o.token_ids + rng.randint(1, 1024, observation).tolist()
                 for p, o in zip(prompts, outs)]
    return latencies, max(len(p) for p in prompts)

  lines = [f"multi-turn probe: {episodes} episodes x {turns} turns, +{generated} generated "
           f"+{observation} observation tokens per turn, {cfg.num_params / 1e6:.1f}M params"]
  totals = {}
  for name, mb in (("uncached", 0), ("prefix cache", 1024)):
    engine = JaxEngine(model, prefix_cache_mb=mb)
    asyncio.run(conversation_wave(engine))                       # compiles every shape
    if engine.prefix_cache is not None:
      engine.prefix_cache.clear()
    latencies, context = asyncio.run(conversation_wave(engine))
    totals[name] = sum(latencies)
    lines.append(f"  {name:13s} turn 1 {latencies[0]:6.2f} s, turn {turns} {latencies[-1]:6.2f} s "
                 f"({latencies[-1] / latencies[0]:5.1f}x), total {totals[name]:6.2f} s "
                 f"(context {first} -> {context} tokens)")
  lines.append(f"  the prefix cache is {totals['uncached'] / totals['prefix cache']:.1f}x faster")
  return lines


def continuous_batching_probe(slots: int = 16, requests: int = 64, episodes: int = 32,
                              turns: int = 4) -> list[str]:
  """Continuous refill against static batching on one model and the same seeds: a queue of
  mixed-length completions, and episodes whose turns arrive after random tool waits."""
  import numpy as np
  from flax import nnx

  from orchestra.engines import JaxEngine, SamplingParams
  from orchestra.models import CausalLM, DecoderConfig

  cfg = DecoderConfig("qwen3", vocab_size=1024, hidden_size=128, intermediate_size=384,
                      num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, qk_norm=True)
  model = CausalLM(cfg, rngs=nnx.Rngs(0))
  rng = np.random.RandomState(0)
  queue = [(rng.randint(1, 1024, rng.randint(32, 200)).tolist(),
            SamplingParams(max_tokens=int(rng.randint(16, 257)), temperature=1.0, seed=i))
           for i in range(requests)]
  waits = rng.uniform(0.0, 0.2, (episodes, turns))

  async def mixed(engine):
    await asyncio.gather(*(engine.generate(p, s) for p, s in queue))

  async def agents(engine):
    async def episode(i):
      prompt = queue[i][0]
      for turn in range(turns):
        out = await engine.generate(prompt, SamplingParams(max_tokens=int(16 + 24 * (i % 5)),
                                                           temperature=1.0, seed=97 * i + turn))
        await asyncio.sleep(waits[i, turn])                   # a tool call
        prompt = prompt + out.token_ids + [7] * 24              # its observation
    await asyncio.gather(*(episode(i) for i in range(episodes)))

  lines = [f"continuous batching: {slots} slots, {cfg.num_params / 1e6:.1f}M params"]
  for name, workload in ((f"{requests} requests of 16-256 tokens", mixed),
                         (f"{episodes} episodes x {turns} turns, tool waits 0-0.2 s", agents)):
    seconds, warmups = {}, {}
    for refill in (False, True):
      engine = JaxEngine(model, max_batch_size=slots, refill=refill, prefix_cache_mb=0)
      # which shapes a pass compiles depends on how requests fall into refills: warm up
      # until a pass compiles nothing new
      seconds[refill], warmups[refill] = steady_s(lambda: asyncio.run(workload(engine)), 2)
    lines.append(f"  {name}: static {seconds[False]:.2f} s, continuous {seconds[True]:.2f} s "
                 f"({seconds[False] / seconds[True]:.2f}x; warm-up passes {warmups[False]} / "
                 f"{warmups[True]})")
  return lines


if __name__ == "__main__":
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  app.run(main)
