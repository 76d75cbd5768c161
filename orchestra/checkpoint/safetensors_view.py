"""Zero-copy reading of a safetensors file (each tensor a read-only view of the mapped file),
and streaming writing of one (each tensor's bytes written as it is produced).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {...}}, then the tensors' bytes, offsets relative to the end of the header.
`safetensors.safe_open(...).get_tensor` copies every tensor out of the file; loading
converts the layout anyway (HF [out, in] -> ours), so a view here makes that conversion
the one copy a tensor costs. `safetensors.numpy.save_file` needs every tensor in memory at
once and copies each into `bytes` before writing; `write_safetensors` takes them one at a
time, straight from the array's buffer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import ml_dtypes
import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}


class SafetensorsView:
  """The tensors of one safetensors file, mapped read-only.

  Raises ValueError for a file that is not safetensors (short, bad header, a tensor
  outside the file, an unknown dtype).
  """

  def __init__(self, path: str):
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if data.size < 8:
      raise ValueError(f"{path}: {data.size} bytes, too short for a safetensors file")
    header_len = int.from_bytes(data[:8].tobytes(), "little")
    if 8 + header_len > data.size:
      raise ValueError(f"{path}: header length {header_len} runs past the file's end")
    try:
      header = json.loads(data[8:8 + header_len].tobytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: the safetensors header is not JSON ({e})") from None
    header.pop("__metadata__", None)
    self._path, self._body, self._header = path, data[8 + header_len:], header

  def keys(self) -> list[str]:
    return list(self._header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    """Tensor `name` as a read-only view of the file (no copy)."""
    entry = self._header[name]
    if entry["dtype"] not in DTYPES:
      raise ValueError(f"{self._path}: {name} has dtype {entry['dtype']}, which this reader "
                       f"does not know ({sorted(DTYPES)})")
    begin, end = entry["data_offsets"]
    dtype = np.dtype(DTYPES[entry["dtype"]])
    shape = tuple(entry["shape"])
    if not 0 <= begin <= end <= self._body.size or end - begin != dtype.itemsize * int(
        np.prod(shape, dtype=np.int64)):
      raise ValueError(f"{self._path}: {name}'s offsets [{begin}, {end}) do not fit its "
                       f"shape {shape} and dtype {entry['dtype']} inside the file")
    return self._body[begin:end].view(dtype).reshape(shape)


def write_safetensors(path: str, specs: Sequence[tuple[str, tuple[int, ...], np.dtype]],
                      arrays: Iterable[np.ndarray], metadata: dict[str, str] | None = None):
  """Writes a safetensors file of the tensors `specs` (name, shape, dtype) announces, their
  bytes taken from `arrays` in the same order, one at a time: none is kept, and only a
  non-contiguous one is copied (to C order) before it is written.

  The header is padded with spaces to a multiple of 8 bytes, as the reference writer does,
  so every tensor starts aligned. Raises ValueError when an array does not match its spec
  or the counts differ, or a dtype safetensors cannot hold (a `DTYPES` value).
  """
  names = {np.dtype(v): k for k, v in DTYPES.items()}
  header, offset = {}, 0
  for name, shape, dtype in specs:
    if np.dtype(dtype) not in names:
      raise ValueError(f"{path}: {name} has dtype {np.dtype(dtype)}; safetensors here holds "
                       f"{sorted(str(np.dtype(v)) for v in DTYPES.values())}")
    size = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
    header[name] = {"dtype": names[np.dtype(dtype)], "shape": list(shape),
                    "data_offsets": [offset, offset + size]}
    offset += size
  if metadata:
    header["__metadata__"] = metadata
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)
  with open(path, "wb") as f:
    f.write(len(text).to_bytes(8, "little") + text)
    for (name, shape, dtype), array in zip(specs, arrays, strict=True):
      if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(f"{path}: {name} is {array.dtype}{list(array.shape)}, its header "
                         f"says {np.dtype(dtype)}{list(shape)}")
      f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
