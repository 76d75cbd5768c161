"""A persistent cache of compiled XLA programs, shared by the runs on one machine.

A run compiles dozens of programs: the train step per packed batch shape, the sampler's
prefill per (rows, prefix, prompt) bucket and its decode loop per cache size. Each takes
0.1-2 s on CPU (minutes at paper scale on GPU); the retail CPU config spends ~50 s of its
~7 minutes compiling. With the cache on, a rerun of the same config, a resumed run, a
rollout server started again, or another process of a multi-process run loads the
programs instead. JAX keys each entry on the program, the backend, the devices and the XLA
flags, so a changed model, dtype or device recompiles and never loads a stale program.

The launch scripts turn it on (`--compilation_cache`, default `default_dir()`; empty: off).
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"      # JAX's own variable, read by `default_dir`
MIN_COMPILE_ENV_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"   # JAX's own, when set
MAX_BYTES = 4 << 30                        # least recently used entries go beyond this
MIN_COMPILE_S = 0.2                        # quicker programs are not worth a file read


def default_dir() -> str:
  """`$JAX_COMPILATION_CACHE_DIR` when set (empty: no cache), else
  `$XDG_CACHE_HOME/orchestra/xla` (`~/.cache/orchestra/xla`)."""
  if ENV_VAR in os.environ:
    return os.environ[ENV_VAR]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "orchestra", "xla")


def min_compile_seconds() -> float:
  """`$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` when set (programs that compile faster
  are not cached), else `MIN_COMPILE_S`; ValueError naming the variable when it is not a
  number >= 0."""
  text = os.environ.get(MIN_COMPILE_ENV_VAR, "").strip()
  if not text:
    return MIN_COMPILE_S
  try:
    seconds = float(text)
  except ValueError:
    seconds = -1.0
  if not seconds >= 0:
    raise ValueError(f"{MIN_COMPILE_ENV_VAR}={text!r}: expected seconds, a number >= 0")
  return seconds


def enable(path: str, *, min_compile_s: float | None = None, max_bytes: int = MAX_BYTES
           ) -> bool:
  """Makes JAX read and write compiled programs under `path` (nothing when `path` is
  empty); returns whether the cache is on. Programs compiling in under `min_compile_s`
  (default `min_compile_seconds()`) are not cached. A folder that cannot be created or
  written is refused with the reason, before anything compiles."""
  if not path:
    return False
  if min_compile_s is None:
    min_compile_s = min_compile_seconds()
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OSError(f"compilation cache {path}: {e.strerror} (--compilation_cache= turns the "
                  f"cache off)") from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(f"compilation cache {path} is not writable (--compilation_cache= "
                          f"turns the cache off)")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
  jax.config.update("jax_compilation_cache_max_size", max_bytes)
  return True
