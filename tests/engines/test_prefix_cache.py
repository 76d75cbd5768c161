"""The JaxEngine prefix cache: multi-turn prompts prefill only their new tokens, with log-probs
equal to the uncached path's; a shared first prompt is reused across a group; weight updates
clear it; the byte budget holds."""

import asyncio

import numpy as np
from flax import nnx
from reference_logprobs import forward_logprobs

from orchestra.engines import JaxEngine, SamplingParams
from orchestra.engines.prefix_cache import CachedSequence, PrefixCache, common_prefix_length
from orchestra.models import CausalLM, DecoderConfig

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


async def conversations(engine, firsts, turns=4, observation=40, temperature=0.0):
  """Episodes of `turns` turns: each prompt = the last prompt + completion + observation."""
  rng = np.random.RandomState(1)
  prompts = [list(p) for p in firsts]
  outs = [[] for _ in firsts]
  for turn in range(turns):
    done = await asyncio.gather(*(
        engine.generate(p, SamplingParams(max_tokens=12, temperature=temperature,
                                          seed=100 * i + turn))
        for i, p in enumerate(prompts)))
    for i, c in enumerate(done):
      outs[i].append((list(prompts[i]), c))
      prompts[i] = prompts[i] + c.token_ids + rng.randint(1, 64, observation).tolist()
  return outs


def test_cached_turns_equal_the_uncached_engine_and_a_forward_pass():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  rng = np.random.RandomState(0)
  firsts = [rng.randint(1, 64, 50 + 7 * i).tolist() for i in range(3)]
  cached = JaxEngine(model, prompt_bucket=16, prefix_min_saving=0)
  plain = JaxEngine(model, prompt_bucket=16, prefix_cache_mb=0)
  for temperature in (0.0, 1.0):
    with_cache = asyncio.run(conversations(cached, firsts, temperature=temperature))
    without = asyncio.run(conversations(plain, firsts, temperature=temperature))
    for a_turns, b_turns in zip(with_cache, without, strict=True):
      for (_, a), (_, b) in zip(a_turns, b_turns, strict=True):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    if temperature == 0:
      turns = [turn for episode in with_cache for turn in episode]
      refs = forward_logprobs(model, [prompt + out.token_ids for prompt, out in turns])
      for (prompt, out), ref in zip(turns, refs, strict=True):
        np.testing.assert_allclose(out.logprobs, ref[len(prompt):], atol=1e-4)
  cache = cached.prefix_cache
  assert cache.reused_tokens > 0.6 * cache.prompt_tokens   # turns 2-4 mostly reused
  assert len(cache) == 6            # one per episode and run: each turn's entry replaced the last


def test_rows_keep_only_their_real_slots_after_a_cached_prefix(monkeypatch):
  """A prefix hit is padded to its bucket (right-aligned) and the new tokens to theirs; the
  slots that are padding in every admitted row are not part of a row's span (nor copied
  when rows join a running batch), so a row spans its longest prompt plus at most the new
  tokens' bucket padding, not both buckets -- and the results stay the uncached ones (the
  test above)."""
  from orchestra.engines.slot_batch import SlotBatch
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, prompt_bucket=16, prefix_min_saving=0)
  admissions = []
  admit = SlotBatch.admit

  def spied(batch, fill, count, ids, mask, prefix, source=None):
    admit(batch, fill, count, ids, mask, prefix, source)
    cached = 0 if prefix is None else prefix.mask_BC.shape[1]
    spans = [batch.span[j] for j, r in enumerate(batch.requests) if r in fill[:count]]
    admissions.append((max(len(r.prompt) for r in fill[:count]), max(spans),
                       cached + ids.shape[1]))
  monkeypatch.setattr(SlotBatch, "admit", spied)
  rng = np.random.RandomState(0)
  asyncio.run(conversations(engine, [rng.randint(1, 64, 50 + 7 * i).tolist() for i in range(3)]))
  hits = [(longest, span, padded) for longest, span, padded in admissions if padded > span]
  assert hits, admissions
  for longest, span, padded in admissions:
    assert longest <= span <= longest + 15, admissions    # the new tokens' bucket pads < 16


def test_a_group_reuses_its_shared_first_prompt_and_updates_clear_it():
  model = CausalLM(CFG, rngs=nnx.Rngs(0))
  engine = JaxEngine(model, prompt_bucket=16, prefix_min_saving=0)
  shared = np.random.RandomState(3).randint(1, 64, 80).tolist()
  first = asyncio.run(engine.generate(shared, SamplingParams(max_tokens=6, seed=0)))
  reused = engine.prefix_cache.reused_tokens
  again = asyncio.run(engine.generate(shared + [5, 6], SamplingParams(max_tokens=6, seed=1)))
  assert engine.prefix_cache.reused_tokens - reused >= 80
  ref = forward_logprobs(model, [shared + [5, 6] + again.token_ids])[0]
  np.testing.assert_allclose(again.logprobs, ref[82:], atol=1e-4)
  short = JaxEngine(model, prompt_bucket=16)              # default: short prompts never pay
  asyncio.run(short.generate(shared, SamplingParams(max_tokens=6, seed=0)))
  asyncio.run(short.generate(shared + [5, 6], SamplingParams(max_tokens=6, seed=1)))
  assert short.prefix_cache.reused_tokens == 0 and len(short.prefix_cache) == 0  # not kept
  asyncio.run(engine.update_weights(nnx.state(CausalLM(CFG, rngs=nnx.Rngs(9)), nnx.Param), 1))
  assert len(engine.prefix_cache) == 0 and engine.prefix_cache.nbytes == 0
  assert first.weight_version == 0


def entry(tokens, nbytes_per_token=8):
  n = len(tokens)
  half = np.zeros((n, nbytes_per_token // 8), np.float32)
  return CachedSequence(np.asarray(tokens, np.int32), [half], [half])


def test_lookup_takes_the_longest_common_prefix_and_the_budget_evicts_lru():
  assert common_prefix_length(np.array([1, 2, 3]), np.array([1, 2, 4, 5])) == 2
  cache = PrefixCache(max_bytes=8 * 100, min_tokens=2)
  cache.insert(entry(range(40)))
  cache.insert(entry([0, 1, 2, 9, 9]))
  hit, m = cache.lookup(np.arange(60))
  assert m == 40 and len(hit.tokens) == 40
  assert cache.lookup(np.arange(40))[1] == 39              # the last prompt token is computed
  assert cache.lookup(np.array([7, 7, 7]))[0] is None
  cache.insert(entry(range(50)))                           # extends the first: replaces it
  assert len(cache) == 2 and cache.nbytes == 8 * 55
  cache.insert(entry(range(100, 160)))                     # over budget: LRU goes first
  assert len(cache) == 1 and cache.lookup(np.arange(100, 170))[1] == 60


def test_entries_stay_on_device_and_are_right_aligned_for_a_prefill():
  """An ended row's real slots are copied on device (`take_slots`, bucketed length) and an
  entry's first m tokens land in the last m slots of its prefix row (`prefix_keys_values`);
  a row without a hit gets finite values its mask hides."""
  import jax

  from orchestra.engines.prefix_cache import prefix_keys_values
  from orchestra.models import continuous_batching as cb
  from orchestra.models.kv_cache import KVCache
  rng = np.random.RandomState(0)
  keys = tuple(rng.randn(3, 2, 4, 12).astype(np.float32) for _ in range(2))      # [B, K, E, S]
  values = tuple(rng.randn(3, 2, 12, 4).astype(np.float32) for _ in range(2))    # [B, K, S, E]
  cache = KVCache(keys, values, np.ones((3, 12), bool), np.zeros(3, np.int32), np.int32(12))
  slots = np.array([2, 3, 5, 6, 7, 7, 7, 7], np.int32)       # 5 real slots, bucketed to 8
  got_k, got_v = cb.take_slots(cache, np.int32(1), slots)
  assert all(isinstance(a, jax.Array) for a in got_k + got_v)
  np.testing.assert_array_equal(got_k[1], keys[1][1][:, :, slots])
  np.testing.assert_array_equal(got_v[1], values[1][1][:, slots])
  stored = CachedSequence(np.arange(5, dtype=np.int32), got_k, got_v)
  rows_k, rows_v = prefix_keys_values([(stored, 4), (None, 0), (stored, 2)], 6)
  for layer in range(2):
    assert rows_k[layer].shape == (3, 2, 4, 6) and rows_v[layer].shape == (3, 2, 6, 4)
    np.testing.assert_array_equal(rows_k[layer][0, :, :, 2:], keys[layer][1][:, :, slots[:4]])
    np.testing.assert_array_equal(rows_v[layer][2, :, 4:], values[layer][1][:, slots[:2]])
    assert np.isfinite(rows_k[layer][1]).all() and np.isfinite(rows_v[layer][1]).all()
