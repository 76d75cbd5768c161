"""KV-cache decoding equals the full forward and transformers' greedy generate."""

import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward, forward_with_cache
from flax import nnx
from hf_fixtures import make_hf_model, padded_batch

from orchestra.checkpoint import load_hf

from orchestra.models import KVCache, MemoryOptions
from orchestra.models.blockwise_attention import attend_cache_blockwise
from orchestra.models.decoding import (GREEDY, CachedPrefix, Sampler, distinct_rows, generate,
                                       processed_logprobs)


@pytest.fixture(scope="module", params=["qwen3", "llama3"])
def pair(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  hf_model = make_hf_model(request.param, path, seed=1)
  return load_hf(path), hf_model


def test_prefill_then_steps_equal_full_forward(pair):
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, length=14, pad_left=5)
  full = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
  prefill = 8
  cache = KVCache.init(model.config, ids.shape[0], 20)
  logits, cache = forward_with_cache(model, jnp.asarray(ids[:, :prefill]), cache,
                                     jnp.asarray(mask[:, :prefill]))
  steps = [np.asarray(logits)]
  for t in range(prefill, ids.shape[1]):
    logits, cache = forward_with_cache(model, jnp.asarray(ids[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  incremental = np.concatenate(steps, axis=1)
  real = mask.astype(bool)
  np.testing.assert_allclose(incremental[real], full[real], atol=1e-5, rtol=0)
  assert int(cache.index) == ids.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.next_position_B), mask.sum(1))


def test_prefill_after_a_long_prefix_in_key_blocks_equals_full_forward(pair, monkeypatch):
  """A second prefill chunk of 100 tokens over 300 cache slots (key blocks of 128 at 0, 128
  and, overlapping, 172) through `attend_cache_blockwise` (forced: the scores are small
  here) gives the full forward's logits, and the decode steps after it too."""
  from orchestra.models import decoder
  monkeypatch.setattr(decoder, "DENSE_SCORES_MAX_BYTES", 0)
  blocked = []
  monkeypatch.setattr(decoder, "attend_cache_blockwise",
                      lambda *a: blocked.append(a[0].shape) or attend_cache_blockwise(*a))
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, length=283, pad_left=37, seed=5)
  full = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
  cache = KVCache.init(model.config, ids.shape[0], 300)
  pieces = []
  # Its own compiled step: the patched globals are read when it traces.
  step = nnx.jit(lambda model, *args: model.forward_with_cache(*args))
  for start, stop in ((0, 180), (180, 280)) + tuple((t, t + 1) for t in range(280, 283)):
    logits, cache = step(model, jnp.asarray(ids[:, start:stop]), cache,
                         jnp.asarray(mask[:, start:stop]))
    pieces.append(np.asarray(logits))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1)[real], full[real], atol=1e-5, rtol=0)
  assert {shape[1] for shape in blocked} == {180, 100}      # the prefills; steps run dense


def test_greedy_decode_matches_transformers_generate(pair):
  import torch
  model, hf_model = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=2, length=10, pad_left=3, seed=3)
  ours = np.asarray(generate(model, ids, mask, max_new_tokens=32)[0])
  with torch.no_grad():
    ref = hf_model.generate(torch.tensor(ids, dtype=torch.long),
                            attention_mask=torch.tensor(mask), max_new_tokens=32,
                            do_sample=False, pad_token_id=0)
  ref = ref[:, ids.shape[1]:].numpy()
  assert ref.shape == (2, 32)
  np.testing.assert_array_equal(ours, ref)


def test_stop_ids_pad_the_rest_of_the_row(pair):
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=2, length=6, pad_left=2, seed=4)
  free = np.asarray(generate(model, ids, mask, max_new_tokens=12)[0])
  stop = int(free[0, 3])
  stopped = np.asarray(generate(model, ids, mask, max_new_tokens=12, stop_ids=[stop], pad_id=-1)[0])
  first = list(free[0]).index(stop)
  np.testing.assert_array_equal(stopped[0, :first + 1], free[0, :first + 1])
  assert (stopped[0, first + 1:] == -1).all()


@pytest.mark.parametrize("sampler", [Sampler(1.0), Sampler(0.7, top_k=5), Sampler(1.0, top_p=0.8),
                                     GREEDY])
def test_sampled_logprobs_equal_a_forward_pass(pair, sampler):
  """Sampled tokens re-scored by a full forward give the reported log-probs."""
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=3, length=7, pad_left=2, seed=5)
  tokens, logps = generate(model, ids, mask, max_new_tokens=10, select=sampler, seeds=[1, 2, 3])
  full_ids = np.concatenate([ids, np.asarray(tokens)], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(tokens)], axis=1)
  logits = forward(model, jnp.asarray(full_ids), jnp.asarray(full_mask))[:, ids.shape[1] - 1:-1]
  t = sampler.temperature or 1.0          # greedy reports log p under softmax(logits)
  ref = processed_logprobs(logits.reshape(-1, logits.shape[-1]), t, sampler.top_k, sampler.top_p)
  ref = np.take_along_axis(np.asarray(ref), np.asarray(tokens).reshape(-1, 1), axis=1)
  np.testing.assert_allclose(np.asarray(logps).reshape(-1), ref[:, 0], atol=1e-4)
  assert np.isfinite(np.asarray(logps)).all()


def test_seeds_make_rows_independent_of_their_batch(pair):
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=3, length=6, pad_left=0, seed=6)
  both, _ = generate(model, ids, mask, max_new_tokens=8, select=Sampler(1.0), seeds=[11, 12, 13])
  alone, _ = generate(model, ids[2:], mask[2:], max_new_tokens=8, select=Sampler(1.0), seeds=[13])
  np.testing.assert_array_equal(np.asarray(both)[2], np.asarray(alone)[0])
  again, _ = generate(model, ids, mask, max_new_tokens=8, select=Sampler(1.0), seeds=[11, 12, 14])
  assert not np.array_equal(np.asarray(again)[2], np.asarray(both)[2])


def test_distinct_rows_maps_each_row_to_its_first_copy_padded_to_a_power_of_two():
  first_U, source_B = distinct_rows(["a", "b", "a", "c", "b", "a", "a", "a"])
  assert first_U.tolist() == [0, 1, 3, 0] and source_B.tolist() == [0, 1, 0, 2, 1, 0, 0, 0]
  first_U, source_B = distinct_rows(["a", "b", "c", "a"])           # 3 -> 4: nothing saved
  assert first_U.tolist() == [0, 1, 2, 3] and source_B is None


def test_rows_sharing_a_prompt_prefill_it_once_and_sample_as_if_alone(pair, monkeypatch):
  """A GRPO-style batch (2 prompts x 4 rows) prefills 2 rows; each row's tokens equal those of
  the path that prefills every row (an explicit empty prefix), its log-probs within 1e-5."""
  import orchestra.models.decoding as decoding
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=2, length=9, pad_left=3, seed=8)
  ids, mask = np.repeat(ids, 4, axis=0), np.repeat(mask, 4, axis=0)
  prefilled = []
  prefill = decoding.prefill
  monkeypatch.setattr(decoding, "prefill",
                      lambda m, prefix, p, *a, **k: prefilled.append(p.shape) or prefill(m, prefix,
                                                                                        p, *a, **k))
  seeds, sampler = list(range(20, 28)), Sampler(1.0)
  shared = generate(model, ids, mask, max_new_tokens=11, select=sampler, seeds=seeds)
  every = generate(model, ids, mask, max_new_tokens=11, select=sampler, seeds=seeds,
                   prefix=CachedPrefix.empty(model.config, 8, model.model.dtype))
  assert prefilled == [(2, 9), (8, 9)]                  # traced once each (a fresh shape)
  np.testing.assert_array_equal(shared[0], every[0])
  np.testing.assert_allclose(shared[1], every[1], atol=1e-5)
  assert len({tuple(row) for row in np.asarray(shared[0])}) > 2     # rows sample on their own


def test_generate_rejects_right_padded_prompts(pair):
  model, _ = pair
  ids = np.ones((2, 4), np.int32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
  with pytest.raises(ValueError, match="left-padded"):
    generate(model, ids, mask, max_new_tokens=2)


def test_a_remat_model_decodes_like_the_plain_one(tmp_path):
  """Remat is for the backward pass; the cached decode path of a remat model is the plain one
  (the paper configs train with remat and sample in-process with the same model)."""
  path = tmp_path / "qwen3"
  make_hf_model("qwen3", path, seed=1)
  ids, mask, _ = padded_batch(128, batch=2, length=6, pad_left=2)
  out = [generate(load_hf(path, memory=MemoryOptions(remat=remat)), jnp.asarray(ids),
                  jnp.asarray(mask), max_new_tokens=4) for remat in ("none", "full")]
  np.testing.assert_array_equal(np.asarray(out[0][0]), np.asarray(out[1][0]))
  np.testing.assert_allclose(np.asarray(out[0][1]), np.asarray(out[1][1]), atol=1e-6)
