"""Huge pages for XLA:CPU's per-call buffers: a launch script restarts itself with them.

On the CPU backend every call of a compiled program allocates the program's temporary
buffer (all of a training step's activations: 407 MiB for the anchors' fwd+bwd of a
1.2M-parameter Qwen3 at 32 x 128 tokens) with `malloc` on one of XLA's worker threads, and
frees it when the call ends. glibc serves a block that large with a fresh `mmap` (a worker
thread's arena grows in 64 MiB heaps at most) and unmaps it on `free`, so each call faults
every 4 KiB page of it in again: on 2 cores, 104k minor page faults and 0.22 s of kernel
time in a 0.45 s fwd+bwd call.

glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) marks such blocks for
transparent huge pages, so the same buffer takes ~200 faults of 2 MiB each: fwd+bwd 0.43
-> 0.35 s, the anchors' GRPO step 0.57-0.69 -> 0.53-0.62 s, rollouts and peak RSS
unchanged (same-session A/B on 2 cores, four runs each). Keeping freed memory in the heap
instead (`mallopt`: one arena, no `mmap`) saves as much in the update but made rollouts
9-15% slower and let the heap grow, so it is not used.

glibc reads tunables only when a process starts, hence `reexec_with_huge_pages()`: the
first statement of a launch script restarts the interpreter in place (same PID, same
arguments) with the tunable added to `GLIBC_TUNABLES`. It does nothing when the tunable is
already there (set either way), with `ORCHESTRA_HUGE_PAGES=0`, when JAX will compute on an
accelerator (device buffers do not come from `malloc`), without glibc >= 2.35, when the
kernel's transparent huge pages are off, or for a program that cannot be read again
(`python -c`, a script on stdin).
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

OPT_OUT_VAR = "ORCHESTRA_HUGE_PAGES"             # "0": leave malloc as it is
TUNABLES_VAR = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def environ_with_huge_pages(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
  """`environ` with `glibc.malloc.hugetlb=1` appended to `GLIBC_TUNABLES`, or None when it
  would change nothing (see the module docstring for when)."""
  tunables = environ.get(TUNABLES_VAR, "")
  if (environ.get(OPT_OUT_VAR, "1").strip() == "0"
      or any(t.split("=")[0] == TUNABLE for t in tunables.split(":"))
      or not _cpu_backend_ahead(environ) or not _huge_pages_available()):
    return None
  return {**environ, TUNABLES_VAR: ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def reexec_with_huge_pages() -> None:
  """Restarts this interpreter with `environ_with_huge_pages()` (same PID and arguments);
  returns only when there is nothing to change, or when the program was not read from a
  file it can read again (`python -c`, a script on stdin). Call it before anything else."""
  environ = environ_with_huge_pages()
  if environ is not None and os.path.isfile(sys.argv[0]):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


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
