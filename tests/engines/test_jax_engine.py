"""JaxEngine: batching of concurrent requests, log-probs, in-process weight swap."""

import asyncio
import gc
import weakref

import numpy as np
import pytest
from flax import nnx
from reference_logprobs import forward_logprobs

from orchestra.checkpoint import load_hf, save_hf
from orchestra.engines import JaxEngine, SamplingParams
from orchestra.models import CausalLM, DecoderConfig

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def prompts(n, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(1, 64, rng.randint(3, 12)).tolist() for _ in range(n)]


def test_concurrent_requests_match_a_forward_pass_and_are_batched():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, prompt_bucket=16)
  calls = []
  original = engine._admit
  engine._admit = lambda batch, admitted: calls.append(len(admitted)) or original(batch, admitted)

  async def main():
    return await asyncio.gather(*(engine.generate(p, SamplingParams(max_tokens=5 + i % 3, seed=i))
                                  for i, p in enumerate(prompts(12))))

  outs = asyncio.run(main())
  assert sum(calls) == 12 and len(calls) < 12          # requests shared batches
  refs = forward_logprobs(model, [p + out.token_ids for p, out in zip(prompts(12), outs)])
  for p, out, ref, i in zip(prompts(12), outs, refs, range(12), strict=True):
    assert len(out.token_ids) == 5 + i % 3 and out.finish_reason == "length"
    np.testing.assert_allclose(out.logprobs, ref[len(p):], atol=1e-4)


def test_a_group_sharing_a_prompt_prefills_it_once_and_samples_as_if_alone(monkeypatch):
  """2 prompts x 4 requests arrive together: the admission prefills 2 rows, not 8 (nor the
  fillers), and every completion is the one that request gets alone (same seed)."""
  from orchestra.engines.slot_batch import SlotBatch
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  prefilled, admit = [], SlotBatch.admit
  monkeypatch.setattr(SlotBatch, "admit", lambda batch, fill, count, ids, *rest: (
      prefilled.append((len(fill), len(ids))) or admit(batch, fill, count, ids, *rest)))
  group = [p for p in prompts(2, seed=4) for _ in range(4)]
  sampling = [SamplingParams(max_tokens=6, temperature=1.0, seed=30 + i) for i in range(8)]

  async def together():
    engine = JaxEngine(model, prompt_bucket=16)
    return await asyncio.gather(*(engine.generate(p, s) for p, s in zip(group, sampling)))

  outs = asyncio.run(together())
  assert prefilled == [(8, 2)]
  for p, s, out in zip(group, sampling, outs):
    alone = asyncio.run(JaxEngine(model, prompt_bucket=16).generate(p, s))
    assert out.token_ids == alone.token_ids
    np.testing.assert_allclose(out.logprobs, alone.logprobs, atol=1e-5)
  assert len({tuple(out.token_ids) for out in outs}) > 2


def test_stop_tokens_and_settings_groups():
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)))
  p = prompts(1)[0]
  free = asyncio.run(engine.generate(p, SamplingParams(max_tokens=8, temperature=0)))
  stop = free.token_ids[2]
  cut = asyncio.run(engine.generate(p, SamplingParams(max_tokens=8, temperature=0,
                                                      stop_token_ids=(stop,))))
  first = free.token_ids.index(stop)
  assert cut.token_ids == free.token_ids[:first + 1] and cut.finish_reason == "stop"

  async def mixed():
    return await asyncio.gather(engine.generate(p, SamplingParams(max_tokens=4, temperature=0)),
                                engine.generate(p, SamplingParams(max_tokens=4, temperature=1.0,
                                                                  top_k=3, seed=1)))
  greedy, sampled = asyncio.run(mixed())
  assert greedy.token_ids == free.token_ids[:4] and len(sampled.token_ids) == 4


def test_update_weights_changes_outputs_and_bumps_the_version():
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)))
  p, greedy = prompts(1)[0], SamplingParams(max_tokens=8, temperature=0)
  before = asyncio.run(engine.generate(p, greedy))
  new_params = nnx.state(CausalLM(CFG, rngs=nnx.Rngs(5)), nnx.Param)
  asyncio.run(engine.update_weights(new_params, version=7))
  after = asyncio.run(engine.generate(p, greedy))
  assert (before.weight_version, after.weight_version) == (0, 7)
  assert before.token_ids != after.token_ids


def test_bad_prompts_fail_clearly():
  from orchestra.engines import EngineError
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)))
  with pytest.raises(EngineError, match="empty prompt"):
    asyncio.run(engine.generate([], SamplingParams()))
  with pytest.raises(EngineError, match="must be in"):
    asyncio.run(engine.generate([1, 99], SamplingParams()))


def test_requests_that_trickle_in_are_gathered_into_one_batch(monkeypatch):
  """Requests arriving one at a time (as over HTTP) while the queue keeps growing are
  decoded together, not as a first small batch and then the rest. Deterministic: one
  request arrives during each of the engine's waits."""
  import types

  import orchestra.engines.jax_engine as jax_engine
  from orchestra.engines.slot_batch import EndedRow
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)), max_gather_s=60.0)
  sizes, jobs, arrivals = [], [], list(prompts(12))
  sampling = SamplingParams(max_tokens=1, temperature=1.0)
  monkeypatch.setattr(engine, "_step", lambda batch, admitted, cancelled: (
      sizes.append(len(admitted)) or [EndedRow(r, [1], [-0.1], "length") for r in admitted]))
  real_sleep = asyncio.sleep

  async def sleep_while_one_more_arrives(_):
    if arrivals:
      jobs.append(asyncio.ensure_future(engine.generate(arrivals.pop(0), sampling)))
    await real_sleep(0)

  fake = types.SimpleNamespace(**{n: getattr(asyncio, n) for n in dir(asyncio)
                                  if not n.startswith("__")})
  fake.sleep = sleep_while_one_more_arrives
  monkeypatch.setattr(jax_engine, "asyncio", fake)

  async def main():
    jobs.append(asyncio.ensure_future(engine.generate(arrivals.pop(0), sampling)))
    while arrivals or not all(j.done() for j in jobs):
      await real_sleep(0)

  asyncio.run(main())
  assert sizes == [12]


def test_a_reload_from_a_folder_frees_the_old_parameters_at_once(tmp_path):
  """Each nnx Param sits in a reference cycle: without help, a rollout server kept every
  replaced model's arrays until Python's cyclic GC happened to run (a 630M model's
  `launch/serve.py` grew from 2.7 to 10.4 GB over four reloads). The caller's model goes at
  the first reload (a weak reference tells); the engine's own loaded weights are deleted."""
  folder = str(save_hf(CausalLM(CFG, rngs=nnx.Rngs(3)), tmp_path / "export"))
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)))
  greedy = SamplingParams(max_tokens=4, temperature=0)

  async def reload_three_times():             # one event loop, as in a server
    callers = weakref.ref(engine.model.model.embed[...])
    await engine.update_weights(folder, version=1)
    loaded = []
    for version in (2, 3):
      loaded.append(engine.model.model.embed[...])
      await engine.update_weights(folder, version=version)
    out = await engine.generate([1, 2, 3], greedy)
    return callers() is None, [a.is_deleted() for a in loaded], out.weight_version

  gc.disable()                               # only the engine's own collection may run
  try:
    assert asyncio.run(reload_three_times()) == (True, [True, True], 3)
  finally:
    gc.enable()


def test_weights_replaced_during_a_row_are_deleted_once_the_row_ends(tmp_path):
  a = str(save_hf(CausalLM(CFG, rngs=nnx.Rngs(3)), tmp_path / "a"))
  b = str(save_hf(CausalLM(CFG, rngs=nnx.Rngs(4)), tmp_path / "b"))
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)), prompt_bucket=16, chunk_steps=2)
  prompt, sampling = [3, 4, 5, 6], SamplingParams(max_tokens=40, temperature=0)

  async def main():
    await engine.update_weights(a, version=1)
    on_a = engine.model.model.embed[...]
    running = asyncio.ensure_future(engine.generate(prompt, sampling))
    while engine._batch is None or not engine._batch.live:
      await asyncio.sleep(0.001)
    await engine.update_weights(b, version=2)
    deleted_mid_row = on_a.is_deleted()
    before = await running
    await asyncio.wait_for(engine._worker, 60)
    return before, deleted_mid_row, on_a.is_deleted()

  before, deleted_mid_row, deleted_after = asyncio.run(main())
  reference = asyncio.run(JaxEngine(load_hf(a, "float32")).generate(prompt, sampling))
  assert before.weight_version == 1
  assert before.token_ids == reference.token_ids
  assert (deleted_mid_row, deleted_after) == (False, True)


def test_an_update_that_hands_back_the_served_arrays_keeps_them(tmp_path):
  """After a folder reload the engine owns its weights and deletes them when replaced, but
  not when the update is those same arrays (re-tagging the served weights)."""
  folder = str(save_hf(CausalLM(CFG, rngs=nnx.Rngs(3)), tmp_path / "export"))
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)))
  greedy = SamplingParams(max_tokens=4, temperature=0)

  async def main():
    await engine.update_weights(folder, version=1)
    before = await engine.generate([1, 2, 3], greedy)
    await engine.update_weights(nnx.state(engine.model, nnx.Param), version=2)
    await engine.update_weights(engine.model, version=3)
    return before, await engine.generate([1, 2, 3], greedy)

  before, after = asyncio.run(main())
  assert (after.token_ids, after.weight_version) == (before.token_ids, 3)


def test_a_request_cancelled_while_the_worker_gathers_leaves_it_clean():
  engine = JaxEngine(CausalLM(CFG, rngs=nnx.Rngs(0)), max_wait_s=0.05, max_gather_s=0.2)

  async def main():
    request = asyncio.ensure_future(engine.generate([1, 2, 3], SamplingParams(max_tokens=4)))
    await asyncio.sleep(0.01)                        # the worker is gathering a batch
    request.cancel()
    await asyncio.wait_for(asyncio.wait([engine._worker]), 30)
    return engine._worker.exception()

  assert asyncio.run(main()) is None
