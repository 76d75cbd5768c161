"""KV-cache decoding equals the full forward and transformers' greedy generate."""

import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import make_hf_model, padded_batch

from orchestra.models import KVCache, load_hf
from orchestra.models.decoding import generate


@pytest.fixture(scope="module", params=["qwen3", "llama3"])
def pair(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  hf_model = make_hf_model(request.param, path, seed=1)
  return load_hf(path), hf_model


def test_prefill_then_steps_equal_full_forward(pair):
  model, _ = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, length=14, pad_left=5)
  full = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  prefill = 8
  cache = KVCache.init(model.config, ids.shape[0], 20)
  logits, cache = model.forward_with_cache(jnp.asarray(ids[:, :prefill]), cache,
                                           jnp.asarray(mask[:, :prefill]))
  steps = [np.asarray(logits)]
  for t in range(prefill, ids.shape[1]):
    logits, cache = model.forward_with_cache(jnp.asarray(ids[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  incremental = np.concatenate(steps, axis=1)
  real = mask.astype(bool)
  np.testing.assert_allclose(incremental[real], full[real], atol=1e-5, rtol=0)
  assert int(cache.index) == ids.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.next_position_B), mask.sum(1))


def test_greedy_decode_matches_transformers_generate(pair):
  import torch
  model, hf_model = pair
  ids, mask, _ = padded_batch(model.config.vocab_size, batch=2, length=10, pad_left=3, seed=3)
  ours = np.asarray(generate(model, ids, mask, max_new_tokens=32))
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
  free = np.asarray(generate(model, ids, mask, max_new_tokens=12))
  stop = int(free[0, 3])
  stopped = np.asarray(generate(model, ids, mask, max_new_tokens=12, stop_ids=[stop], pad_id=-1))
  first = list(free[0]).index(stop)
  np.testing.assert_array_equal(stopped[0, :first + 1], free[0, :first + 1])
  assert (stopped[0, first + 1:] == -1).all()


def test_generate_rejects_right_padded_prompts(pair):
  model, _ = pair
  ids = np.ones((2, 4), np.int32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
  with pytest.raises(ValueError, match="left-padded"):
    generate(model, ids, mask, max_new_tokens=2)
