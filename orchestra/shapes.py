"""Shape buckets: padded lengths come from a short list, so jit compiles a few programs.

`next_pow2(n)`: batch sizes and the like, rounded up to a power of two.

`bucket_length(n, multiple)`: multiples of `multiple` up to 8 x multiple, then half-octave
steps (12, 16, 24, 32, 48, ... x multiple). Padding costs at most 1/8 extra on short
sequences and 1/2 extra beyond 8 x multiple, and a 2k-8k-token conversation sees 5
lengths instead of a hundred.
"""

from __future__ import annotations


def next_pow2(n: int) -> int:
  """The smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(0, (n - 1).bit_length())


def bucket_length(n: int, multiple: int = 64) -> int:
  """The smallest bucket >= n (and >= multiple)."""
  steps = max(1, -(-n // multiple))
  if steps <= 8:
    return steps * multiple
  size = 8
  while True:
    for step in (size * 3 // 2, size * 2):
      if step >= steps:
        return step * multiple
    size *= 2
