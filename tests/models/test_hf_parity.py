"""Logit parity with `transformers` and exact import/export round trips."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiled import forward
from flax import nnx
from hf_fixtures import TINY_CONFIGS, hf_logits, make_hf_model, padded_batch

from orchestra.checkpoint import load_hf, save_hf

from orchestra.models import CausalLM

FAMILIES = sorted(TINY_CONFIGS)


def _flat_params(model):
  return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  hf_model = make_hf_model(request.param, path)
  return request.param, path, hf_model


def test_import_matches_transformers_logits(family):
  name, path, hf_model = family
  model = load_hf(path, dtype="float32")
  assert isinstance(model, CausalLM)
  ids, mask, positions = padded_batch(hf_model.config.vocab_size)
  ours = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
  ref = hf_logits(hf_model, ids, mask, positions)
  assert ours.shape == ref.shape == (*ids.shape, hf_model.config.vocab_size)
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_padded_row_equals_unpadded_row(family):
  """Left padding must not change a row's logits (positions follow real tokens)."""
  _, path, hf_model = family
  model = load_hf(path)
  ids, mask, _ = padded_batch(hf_model.config.vocab_size, pad_left=4)
  padded = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))[1, 4:]
  alone = np.asarray(forward(model, jnp.asarray(ids[1:2, 4:])))[0]
  np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)


def test_right_padding_gives_real_token_logits(family):
  _, path, hf_model = family
  model = load_hf(path)
  ids, _, _ = padded_batch(hf_model.config.vocab_size, pad_left=0)
  mask = np.ones_like(ids)
  mask[0, -5:] = 0
  padded = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))[0, :-5]
  alone = np.asarray(forward(model, jnp.asarray(ids[:1, :-5])))[0]
  np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=0)


def test_export_reloads_in_transformers_with_same_logits(family, tmp_path):
  import torch
  import transformers
  name, path, hf_model = family
  model = load_hf(path)
  out = save_hf(model, tmp_path / "export")
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["model_type"] == hf_model.config.model_type
  assert os.path.isfile(os.path.join(out, "generation_config.json"))
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  ids, mask, positions = padded_batch(hf_model.config.vocab_size)
  real = mask.astype(bool)
  np.testing.assert_allclose(hf_logits(reloaded.eval(), ids, mask, positions)[real],
                             hf_logits(hf_model, ids, mask, positions)[real], atol=1e-4, rtol=0)


def test_import_of_export_is_bit_identical(family, tmp_path):
  _, path, _ = family
  model = load_hf(path)
  again = load_hf(save_hf(model, tmp_path / "export"))
  a, b = _flat_params(model), _flat_params(again)
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_policy_in_host_memory_exports_the_same_files(tmp_path, dtype):
  """A multi-process run exports the gathered policy from numpy arrays (`rollout_policy`
  with on_device=False): the same bytes as an export from device arrays."""
  path = tmp_path / "src"
  make_hf_model("qwen3", path)
  model = load_hf(path)
  graphdef, state = nnx.split(model)
  on_host = nnx.merge(graphdef, jax.tree.map(np.asarray, state))
  assert isinstance(on_host.model.embed[...], np.ndarray)
  files = [os.path.join(save_hf(m, tmp_path / name, dtype=dtype), "model.safetensors")
           for m, name in ((model, "from_device"), (on_host, "from_host"))]
  with open(files[0], "rb") as a, open(files[1], "rb") as b:
    assert a.read() == b.read()


def test_sharded_safetensors_with_index_round_trip(tmp_path):
  path = tmp_path / "src"
  make_hf_model("qwen3", path)
  model = load_hf(path)
  out = save_hf(model, tmp_path / "sharded", max_shard_bytes=40_000)
  files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
  assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
  with open(os.path.join(out, "model.safetensors.index.json")) as f:
    index = json.load(f)
  assert set(index["weight_map"].values()) == set(files)
  again = load_hf(out)
  a, b = _flat_params(model), _flat_params(again)
  assert all(np.array_equal(a[k], b[k]) for k in a)


def test_export_copies_tokenizer_files(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.train_from_iterator(["the orchestrator calls a tool"] * 10,
                          trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<eos>"]))
  tok_dir = tmp_path / "tok"
  PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(tok_dir)
  make_hf_model("qwen3", tmp_path / "src")
  out = save_hf(load_hf(tmp_path / "src"), tmp_path / "export", tokenizer_dir=str(tok_dir))
  assert os.path.isfile(os.path.join(out, "tokenizer.json"))
  from transformers import AutoTokenizer
  loaded = AutoTokenizer.from_pretrained(out)
  assert loaded.eos_token == "<eos>"


def test_export_replaces_existing_folder_and_leaves_no_temp(tmp_path):
  make_hf_model("qwen2", tmp_path / "src")
  model = load_hf(tmp_path / "src")
  dest = tmp_path / "export"
  save_hf(model, dest)                         # a previous export, once sharded in two:
  (dest / "model-00002-of-00002.safetensors").write_text("old")
  save_hf(model, dest)                         # replaced as a whole
  assert not (dest / "model-00002-of-00002.safetensors").exists()
  assert sorted(os.listdir(tmp_path)) == ["export", "src"]


def test_bf16_export_is_loadable_and_close(tmp_path):
  import torch
  import transformers
  make_hf_model("llama3", tmp_path / "src")
  model = load_hf(tmp_path / "src")
  out = save_hf(model, tmp_path / "bf16", dtype="bfloat16")
  with open(os.path.join(out, "config.json")) as f:
    cfg = json.load(f)
  assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert reloaded.dtype == torch.bfloat16
  bf16 = load_hf(out, dtype="bfloat16")
  assert bf16.model.embed[...].dtype == jnp.bfloat16
  f32 = _flat_params(model)
  for key, value in _flat_params(bf16).items():
    np.testing.assert_allclose(value.astype(np.float32), f32[key], rtol=1e-2, atol=1e-6)


def test_gradients_match_transformers(family, tmp_path):
  """d(mean next-token NLL over real tokens)/d(every parameter) equals torch's autograd on
  the same weights and padded batch (names and layouts mapped by the export)."""
  import jax
  import torch
  from safetensors.numpy import load_file
  _, path, hf_model = family
  model = load_hf(path, dtype="float32")
  ids, mask, positions = padded_batch(hf_model.config.vocab_size)
  targets, weight = ids[:, 1:], (mask[:, :-1] * mask[:, 1:]).astype(np.float32)

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    logits = nnx.merge(graphdef, p, rest)(jnp.asarray(ids), jnp.asarray(mask))[:, :-1]
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    return -(logp * weight).sum() / weight.sum()
  grads = jax.jit(jax.grad(loss))(params)
  nnx.update(model, grads)
  ours = load_file(os.path.join(save_hf(model, tmp_path / "grads"), "model.safetensors"))

  hf_model.zero_grad()
  logits = hf_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions, dtype=torch.long)).logits[:, :-1]
  logp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(targets).long()[..., None])
  (-(logp[..., 0] * torch.tensor(weight)).sum() / weight.sum()).backward()
  theirs = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
  assert set(theirs) <= set(ours)
  for name, grad in theirs.items():
    np.testing.assert_allclose(ours[name], grad, atol=2e-5, rtol=1e-3, err_msg=name)
