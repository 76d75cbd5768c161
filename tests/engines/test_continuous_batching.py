"""Continuous batching in JaxEngine: a row that ends frees its slot for a waiting request,
and no row's tokens or log-probs depend on when it joined, who shared the cache, or how
the cache was shifted and grown meanwhile."""

import asyncio

import numpy as np
from flax import nnx

from orchestra.engines import JaxEngine, SamplingParams
from orchestra.models import CausalLM, DecoderConfig
from orchestra.models.decoding import Sampler, generate
from orchestra.shapes import bucket_length

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def alone(model, prompt, sampling: SamplingParams, seed: int, decode_steps: int | None = None):
  """The request decoded by itself with `decoding.generate`: the reference.

  The prompt is left-padded to its length bucket (`bucket_length(n, 16)`) and `decode_steps`
  tokens (default `max_tokens`) decoded, then cut to `max_tokens`: a row's samples depend
  only on its own seed and step count, so the cut equals a `max_tokens` run, and calls of
  one test share one compiled program.
  """
  width = bucket_length(len(prompt), 16)
  ids, mask = np.zeros((1, width), np.int32), np.zeros((1, width), bool)
  ids[0, width - len(prompt):], mask[0, width - len(prompt):] = prompt, True
  tokens, logps = generate(model, ids, mask,
                           max_new_tokens=decode_steps or sampling.max_tokens, seeds=[seed],
                           select=Sampler(sampling.temperature, sampling.top_k, sampling.top_p),
                           stop_ids=sampling.stop_token_ids)
  tokens = np.asarray(tokens)[0, :sampling.max_tokens].tolist()
  logps = np.asarray(logps)[0, :sampling.max_tokens]
  stops = [i + 1 for i, t in enumerate(tokens) if t in sampling.stop_token_ids]
  end = stops[0] if stops else len(tokens)
  return tokens[:end], logps[:end]


def staggered_requests(n, seed=0):
  rng = np.random.RandomState(seed)
  return [(rng.randint(1, 64, rng.randint(3, 40)).tolist(),
           SamplingParams(max_tokens=int(rng.choice([3, 9, 30, 70])), temperature=1.0,
                          seed=100 + i, stop_token_ids=(7,)))
          for i in range(n)]


def test_refilled_slots_give_each_request_its_solo_result():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, max_batch_size=4, prompt_bucket=16, chunk_steps=4,
                     prefix_cache_mb=0)
  live_at_admission, order = [], []
  admit = engine._admit
  engine._admit = lambda batch, rows: (live_at_admission.append(batch.live), admit(batch, rows))
  requests = staggered_requests(14)

  async def one(i, prompt, sampling):
    await asyncio.sleep(0.01 * (i % 5))                     # arrivals spread over time
    out = await engine.generate(prompt, sampling)
    order.append(i)
    return out

  async def main():
    return await asyncio.gather(*(one(i, p, s) for i, (p, s) in enumerate(requests)))

  outs = asyncio.run(main())
  assert any(n > 0 for n in live_at_admission)   # requests joined rows still decoding
  long_first = [i for i in range(4) if len(outs[i].token_ids) == 70]   # ran all 70 steps
  assert long_first and order.index(long_first[0]) > 4          # short ones overtook it
  for (prompt, sampling), out in zip(requests, outs, strict=True):
    tokens, logps = alone(model, prompt, sampling, sampling.seed, decode_steps=70)
    assert out.token_ids == tokens
    np.testing.assert_allclose(out.logprobs, logps, atol=1e-5)
    assert out.finish_reason == ("stop" if tokens[-1] == 7 else "length")
    assert len(out.token_ids) <= sampling.max_tokens


def test_a_wave_into_an_idle_engine_decodes_in_its_prefilled_cache(monkeypatch):
  """With no row live, the prefilled batch is the decode state: nothing is copied into an
  empty cache, the filler row (3 requests prefill as 4) stays idle, and each request gets
  its solo result."""
  from orchestra.engines.slot_batch import SlotBatch
  from orchestra.models import continuous_batching as cb
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, max_batch_size=8, prompt_bucket=16, prefix_cache_mb=0)
  inserts, admitted = [], []
  insert, admit = cb.insert_rows, SlotBatch.admit
  monkeypatch.setattr(cb, "insert_rows", lambda *a: (inserts.append(a[2]), insert(*a))[1])

  def spied(batch, *args):
    admit(batch, *args)
    admitted.append(([r is not None for r in batch.requests],
                     np.asarray(batch.state.active_B).tolist()))
  monkeypatch.setattr(SlotBatch, "admit", spied)
  requests = staggered_requests(3, seed=4)

  async def wave():
    return await asyncio.gather(*(engine.generate(p, s) for p, s in requests))

  outs = asyncio.run(wave())
  assert not inserts
  assert admitted == [([True, True, True, False], [True, True, True, False])]
  for (prompt, sampling), out in zip(requests, outs, strict=True):
    tokens, logps = alone(model, prompt, sampling, sampling.seed, decode_steps=70)
    assert out.token_ids == tokens
    np.testing.assert_allclose(out.logprobs, logps, atol=1e-5)


def test_a_long_prompt_grows_the_cache_of_a_running_batch():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, max_batch_size=4, prompt_bucket=16, chunk_steps=4,
                     prefix_cache_mb=0)
  short = ([5, 6, 8, 9], SamplingParams(max_tokens=60, temperature=0, seed=1))
  long = (list(np.random.RandomState(1).randint(1, 64, 150)),
          SamplingParams(max_tokens=20, temperature=0, seed=2))

  async def main():
    first = asyncio.ensure_future(engine.generate(*short))
    await asyncio.sleep(0.05)                                # the short row is decoding
    return await asyncio.gather(first, engine.generate(*long))

  outs = asyncio.run(main())
  for (prompt, sampling), out in zip((short, long), outs):
    tokens, logps = alone(model, prompt, sampling, sampling.seed)
    assert out.token_ids == tokens
    np.testing.assert_allclose(out.logprobs, logps, atol=1e-5)


def test_rows_in_flight_finish_on_their_weights_and_new_ones_start_on_the_update():
  old, new = CausalLM(CFG, rngs=nnx.Rngs(0)), CausalLM(CFG, rngs=nnx.Rngs(5))
  engine = JaxEngine(old, prompt_bucket=16, chunk_steps=2)
  prompt = [3, 4, 5, 6]
  sampling = SamplingParams(max_tokens=40, temperature=0)

  async def main():
    running = asyncio.ensure_future(engine.generate(prompt, sampling))
    while engine._batch is None or not engine._batch.live:
      await asyncio.sleep(0.001)
    await engine.update_weights(new, version=3)
    after = await engine.generate(prompt, sampling)
    return await running, after

  before, after = asyncio.run(main())
  assert (before.weight_version, after.weight_version) == (0, 3)
  assert before.token_ids == alone(old, prompt, sampling, 0)[0]
  assert after.token_ids == alone(new, prompt, sampling, 0)[0]


def test_a_cancelled_request_frees_its_slot_for_a_waiting_one():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, max_batch_size=1, prompt_bucket=16, chunk_steps=4,
                     prefix_cache_mb=0)
  chunks = []
  step = engine._step
  engine._step = lambda *args: chunks.append(1) or step(*args)
  endless = SamplingParams(max_tokens=400, temperature=0, seed=1)      # ~100 chunks alone
  short = ([9, 8, 7, 6], SamplingParams(max_tokens=6, temperature=0, seed=2))

  async def main():
    first = asyncio.ensure_future(engine.generate([3, 4, 5], endless))
    while engine._batch is None or not engine._batch.live:
      await asyncio.sleep(0.001)
    waiting = asyncio.ensure_future(engine.generate(*short))   # no free slot: it waits
    await asyncio.sleep(0.01)
    first.cancel()
    out = await asyncio.wait_for(waiting, 60)
    await asyncio.wait_for(engine._worker, 60)
    return out

  out = asyncio.run(main())
  assert out.token_ids == alone(model, *short, seed=2)[0]
  assert len(chunks) < 30          # not the ~100 chunks of the cancelled row's 400 tokens
  assert engine._batch is None
