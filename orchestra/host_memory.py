"""A host allocator that keeps XLA:CPU's per-call buffers: launch scripts restart with it.

On the CPU backend every call of a compiled program allocates the program's temporary
buffer (all of a training step's activations: 407 MiB for the anchors' fwd+bwd of a
1.2M-parameter Qwen3 at 32 x 128 tokens) with `malloc` on one of XLA's worker threads, and
frees it when the call ends. glibc serves a block that large with a fresh `mmap` (a worker
thread's arena grows in 64 MiB heaps at most) and unmaps it on `free`, so each call faults
every 4 KiB page of it in again and the kernel zeroes it: on 2 cores, 104k minor page
faults and 0.22 s of kernel time in a 0.45 s fwd+bwd call.

Two remedies, chosen by `ORCHESTRA_HOST_ALLOCATOR`:

- `mimalloc` (the default where the `cmeel-mimalloc` wheel is installed, a dependency on
  Linux x86-64 and aarch64): the process runs with mimalloc preloaded (`LD_PRELOAD`). It
  keeps freed memory mapped and committed for `MIMALLOC_PURGE_DELAY` ms before returning
  it, so a step's next call reuses the same pages: no faults, no zeroing. The delay is
  10 s here unless the environment sets one (mimalloc's own 1 s made the multi-turn
  probe's cached episodes 5.16-6.07 s against 4.94-5.23 s with huge pages; 10 s: 4.75 s).
  The anchors' GRPO step 0.444-0.457 -> 0.401-0.426 s, fwd+bwd 0.274-0.283 -> 0.236-0.256 s
  against huge pages (same-session A/B, three runs each, 1 s delay; 10 s: 0.379 s,
  1.22 GiB peak RSS against 1.09-1.13).
- `hugetlb` (the fallback without the wheel): glibc's `glibc.malloc.hugetlb=1` tunable
  (glibc >= 2.35, transparent huge pages not `never`) maps such blocks on 2 MiB pages,
  ~200 faults for the same buffer, but the kernel still zeroes it at every call: fwd+bwd
  0.43 -> 0.35 s against plain glibc on the day it was measured.
- `system`: leave malloc as it is.

Both take effect only when a process starts, hence `reexec_with_host_allocator()`: the
first statement of a launch script restarts the interpreter in place (same PID, same
arguments) with the environment changed. It does nothing when the allocator is already in
place, when JAX will compute on an accelerator (device buffers do not come from `malloc`),
or for a program that cannot be read again (`python -c`, a script on stdin). Children
inherit the environment (rollout servers the run starts); the code interpreter's sandbox
does not (it builds its own).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Mapping

CHOICE_VAR = "ORCHESTRA_HOST_ALLOCATOR"
CHOICES = ("auto", "mimalloc", "hugetlb", "system")
PRELOAD_VAR = "LD_PRELOAD"
TUNABLES_VAR = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
MIMALLOC_DIST, MIMALLOC_FILE = "cmeel-mimalloc", "cmeel.prefix/lib/libmimalloc.so"
PURGE_DELAY_VAR, PURGE_DELAY_MS = "MIMALLOC_PURGE_DELAY", "10000"
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def host_allocator_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
  """`environ` with the chosen allocator put in place (module docstring), or None when it
  would change nothing. `auto` is mimalloc where its library is installed, else hugetlb.
  Raises ValueError for an unknown choice, or for `mimalloc` without its library."""
  choice = environ.get(CHOICE_VAR, "auto").strip() or "auto"
  if choice not in CHOICES:
    raise ValueError(f"{CHOICE_VAR}={choice!r}: expected one of {', '.join(CHOICES)}")
  if choice == "system" or not _cpu_backend_ahead(environ):
    return None
  library = mimalloc_library() if choice in ("auto", "mimalloc") else None
  if choice == "mimalloc" and library is None:
    raise ValueError(f"{CHOICE_VAR}=mimalloc, but the {MIMALLOC_DIST} package is not "
                     "installed (pip install cmeel-mimalloc)")
  if library is not None:
    return _with_preload(environ, library)
  return _with_huge_pages(environ)


def reexec_with_host_allocator() -> None:
  """Restarts this interpreter with `host_allocator_environ()` (same PID and arguments);
  returns only when there is nothing to change, or when the program was not read from a
  file it can read again (`python -c`, a script on stdin). Call it before anything else."""
  environ = host_allocator_environ()
  if environ is not None and os.path.isfile(sys.argv[0]):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


def mimalloc_library() -> str | None:
  """Path of the shared library the `cmeel-mimalloc` wheel installed, or None. A path the
  dynamic loader would split (a space or a colon in it) counts as none."""
  try:
    files = importlib.metadata.distribution(MIMALLOC_DIST).files or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if file.as_posix() == MIMALLOC_FILE:
      path = str(file.locate())
      if os.path.isfile(path) and not set(path) & set(" :"):
        return path
  return None


def _with_preload(environ: Mapping[str, str], library: str) -> dict[str, str] | None:
  """`library` first in `LD_PRELOAD`, and mimalloc's purge delay `PURGE_DELAY_MS` unless
  the environment sets one; None when a mimalloc is preloaded already."""
  preloaded = environ.get(PRELOAD_VAR, "")
  if any("mimalloc" in os.path.basename(p) for p in preloaded.replace(" ", ":").split(":")):
    return None
  return {PURGE_DELAY_VAR: PURGE_DELAY_MS, **environ,
          PRELOAD_VAR: ":".join(filter(None, [library, preloaded]))}


def _with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
  """`glibc.malloc.hugetlb=1` appended to `GLIBC_TUNABLES`; None when the tunable is set
  already (either way) or the C library or kernel cannot honour it."""
  tunables = environ.get(TUNABLES_VAR, "")
  if any(t.split("=")[0] == TUNABLE for t in tunables.split(":")) or not _huge_pages_available():
    return None
  return {**environ, TUNABLES_VAR: ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def _cpu_backend_ahead(environ: Mapping[str, str]) -> bool:
  """Whether JAX will compute on the host: `JAX_PLATFORMS` names cpu first, or it is unset
  and no accelerator plugin is installed."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  import importlib.util
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def _huge_pages_available() -> bool:
  """Linux with glibc >= 2.35 (the tunable's first release) and transparent huge pages on
  (`always` or `madvise`). The glibc version is the running one's ("glibc 2.36"), asked of
  the C library, not guessed by scanning the interpreter's file as `platform.libc_ver`
  does."""
  try:
    libc, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    if libc != "glibc" or tuple(map(int, version.split(".")[:2])) < (2, 35):
      return False
  except (AttributeError, ValueError, OSError):   # no confstr, not glibc, odd version
    return False
  try:
    with open(THP_MODE_FILE) as f:
      return "[never]" not in f.read()
  except OSError:
    return False
