"""SafetensorsView against the safetensors library: the same tensors, and clear errors."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from orchestra.checkpoint.safetensors_view import SafetensorsView


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
