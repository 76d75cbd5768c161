"""SafetensorsView and write_safetensors against the safetensors library (the same tensors,
clear errors), and each HF layout's conversions against each other."""

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from orchestra.checkpoint import tensor_map
from orchestra.checkpoint.safetensors_view import SafetensorsView, write_safetensors
from orchestra.models import CausalLM, DecoderConfig


def test_every_tensor_equals_the_librarys_read(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"w": rng.normal(size=(5, 3)).astype(np.float32),
             "b": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
             "h": rng.normal(size=(2, 2, 2)).astype(np.float16),
             "i": np.arange(6, dtype=np.int64).reshape(3, 2),
             "s": np.array(3.5, np.float32)}
  path = str(tmp_path / "m.safetensors")
  save_file(tensors, path, metadata={"format": "pt"})
  view, reference = SafetensorsView(path), load_file(path)
  assert sorted(view.keys()) == sorted(reference)
  for name, expected in reference.items():
    got = view.get(name)
    assert got.dtype == expected.dtype and view.shape(name) == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert not got.flags.writeable                     # a view of the file, never written


def test_a_short_or_garbled_file_is_a_clear_error(tmp_path):
  short = tmp_path / "short.safetensors"
  short.write_bytes(b"\x01\x02")
  with pytest.raises(ValueError, match="too short"):
    SafetensorsView(str(short))
  garbled = tmp_path / "garbled.safetensors"
  garbled.write_bytes((4).to_bytes(8, "little") + b"{no}")
  with pytest.raises(ValueError, match="not JSON"):
    SafetensorsView(str(garbled))


def test_a_tensor_past_the_end_is_refused(tmp_path):
  header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
  path = tmp_path / "cut.safetensors"
  path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)   # 8 of 16 bytes
  with pytest.raises(ValueError, match="do not fit"):
    SafetensorsView(str(path)).get("w")


def test_the_streaming_writer_is_read_back_by_the_library_with_aligned_tensors(tmp_path):
  rng = np.random.default_rng(1)
  tensors = {"w": rng.normal(size=(5, 3)).astype(np.float32),
             "b": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
             "t": rng.normal(size=(3, 4)).astype(np.float32).T}      # not C-contiguous
  path = str(tmp_path / "w.safetensors")
  specs = [(name, array.shape, array.dtype) for name, array in tensors.items()]
  write_safetensors(path, specs, iter(tensors.values()), metadata={"format": "pt"})
  reference = load_file(path)
  assert sorted(reference) == sorted(tensors)
  for name, expected in tensors.items():
    assert reference[name].dtype == expected.dtype
    np.testing.assert_array_equal(reference[name], expected)
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(header_len))
  assert (8 + header_len) % 8 == 0 and header["__metadata__"] == {"format": "pt"}


def test_the_streaming_writer_refuses_an_array_that_is_not_its_spec(tmp_path):
  path = str(tmp_path / "bad.safetensors")
  with pytest.raises(ValueError, match=r"w is float32\[2\], its header says float32\[3\]"):
    write_safetensors(path, [("w", (3,), np.float32)], [np.zeros(2, np.float32)])
  with pytest.raises(ValueError):                           # fewer arrays than specs
    write_safetensors(path, [("w", (2,), np.float32), ("v", (2,), np.float32)],
                      [np.zeros(2, np.float32)])
  with pytest.raises(ValueError, match="w has dtype complex64"):
    write_safetensors(path, [("w", (2,), np.complex64)], [np.zeros(2, np.complex64)])


@pytest.mark.parametrize("bias", [False, True])
def test_each_layout_maps_ours_to_hf_and_back_exactly(bias):
  cfg = DecoderConfig("llama", vocab_size=11, hidden_size=8, intermediate_size=12,
                      num_layers=1, num_heads=4, num_kv_heads=2, head_dim=2,
                      o_bias=bias, qkv_bias=bias, mlp_bias=bias)
  model = CausalLM(cfg, rngs=nnx.Rngs(0))
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  entries = tensor_map(cfg)
  assert {t.path for t in entries} == set(flat)
  for t in entries:
    ours = np.asarray(flat[t.path][...])
    hf = np.asarray(t.layout.to_hf(jnp.asarray(ours)))
    assert hf.shape == t.layout.hf_shape(ours.shape), t.hf_name
    np.testing.assert_array_equal(t.layout.from_hf(hf), ours)
