"""Huge pages for XLA:CPU's per-call buffers (`orchestra/host_memory.py`): when the
environment gets the glibc tunable, the restart keeping PID and arguments, and the page
faults it saves, counted (not timed) in child processes."""

import json
import os
import subprocess
import sys

import pytest

from orchestra import host_memory
from orchestra.host_memory import TUNABLES_VAR, environ_with_huge_pages

AVAILABLE = environ_with_huge_pages({"JAX_PLATFORMS": "cpu"}) is not None
needs_huge_pages = pytest.mark.skipif(
    not AVAILABLE, reason="no glibc >= 2.35 with transparent huge pages on this machine")


@pytest.fixture
def huge_pages_available(monkeypatch):
  monkeypatch.setattr(host_memory, "_huge_pages_available", lambda: True)


def test_the_tunable_is_appended_to_the_ones_already_set(huge_pages_available):
  env = environ_with_huge_pages({"JAX_PLATFORMS": "cpu", "PATH": "/bin"})
  assert env == {"JAX_PLATFORMS": "cpu", "PATH": "/bin",
                 TUNABLES_VAR: "glibc.malloc.hugetlb=1"}
  env = environ_with_huge_pages({"JAX_PLATFORMS": "cpu",
                                 TUNABLES_VAR: "glibc.malloc.arena_max=2"})
  assert env[TUNABLES_VAR] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ", [
    {"JAX_PLATFORMS": "cpu", TUNABLES_VAR: "glibc.malloc.hugetlb=0"},    # the user's choice
    {"JAX_PLATFORMS": "cpu", TUNABLES_VAR: "glibc.malloc.hugetlb=1"},    # already restarted
    {"JAX_PLATFORMS": "cpu", "ORCHESTRA_HUGE_PAGES": "0"},
    {"JAX_PLATFORMS": "cuda"},
    {"JAX_PLATFORMS": "tpu,cpu"},
])
def test_nothing_changes_when_set_opted_out_or_on_an_accelerator(huge_pages_available,
                                                                 environ):
  assert environ_with_huge_pages(environ) is None


def test_without_kernel_support_nothing_changes(monkeypatch, tmp_path):
  never = tmp_path / "enabled"
  never.write_text("always madvise [never]\n")
  monkeypatch.setattr(host_memory, "THP_MODE_FILE", str(never))
  assert environ_with_huge_pages({"JAX_PLATFORMS": "cpu"}) is None
  monkeypatch.setattr(host_memory, "THP_MODE_FILE", str(tmp_path / "absent"))
  assert environ_with_huge_pages({"JAX_PLATFORMS": "cpu"}) is None


@pytest.mark.parametrize("answer", ["glibc 2.31", "musl 1.2", None, ValueError("no name")])
def test_without_glibc_2_35_nothing_changes(monkeypatch, answer):
  def confstr(name):
    assert name == "CS_GNU_LIBC_VERSION"
    if isinstance(answer, Exception):
      raise answer
    return answer
  monkeypatch.setattr(host_memory.os, "confstr", confstr)
  assert environ_with_huge_pages({"JAX_PLATFORMS": "cpu"}) is None


def _environ_without_tunables() -> dict[str, str]:
  """This process's environment less GLIBC_TUNABLES (which conftest.py may have set)."""
  return {k: v for k, v in os.environ.items() if k != TUNABLES_VAR}


RESTARTING = """
import os, sys
print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], flush=True)
from orchestra.host_memory import reexec_with_huge_pages
reexec_with_huge_pages()
print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])
"""


@needs_huge_pages
def test_the_restart_keeps_pid_and_arguments_and_happens_once(tmp_path):
  script = tmp_path / "script.py"
  script.write_text(RESTARTING)
  env = _environ_without_tunables()
  out = subprocess.run([sys.executable, str(script), "--flag=1", "two words"], env=env,
                       capture_output=True, text=True, timeout=60, check=True).stdout
  first, second, after = out.splitlines()
  pid = first.split()[1]
  assert first == f"start {pid} None ['--flag=1', 'two words']"
  assert second == f"start {pid} glibc.malloc.hugetlb=1 ['--flag=1', 'two words']"
  assert after == f"after {pid} glibc.malloc.hugetlb=1 ['--flag=1', 'two words']"


@needs_huge_pages
def test_a_program_that_cannot_be_read_again_is_not_restarted():
  env = _environ_without_tunables()
  out = subprocess.run([sys.executable, "-c", RESTARTING], env=env, capture_output=True,
                       text=True, timeout=60, check=True).stdout
  assert [line.split()[0] for line in out.splitlines()] == ["start", "after"]
  assert out.splitlines()[1].split()[2] == "None"


# A jitted program whose 64 MiB temporary buffer XLA:CPU allocates and frees at every call;
# prints the minor page faults of each of 6 calls after the first, and the buffer's size.
FAULTS = """
import json, resource
import jax, jax.numpy as jnp

@jax.jit
def program(x):
  y = jax.lax.optimization_barrier(jnp.sin(x))
  return (y * y).sum()

x = jnp.ones((4096, 4096), jnp.float32)
temp = program.lower(x).compile().memory_analysis().temp_size_in_bytes
program(x).block_until_ready()
faults = []
for _ in range(6):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  program(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"temp_pages": temp // resource.getpagesize(), "faults": faults}))
"""


def _faults(env) -> tuple[int, list[int]]:
  env = {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout
  result = json.loads(out.splitlines()[-1])
  return result["temp_pages"], result["faults"]


@needs_huge_pages
def test_huge_pages_spare_the_faults_of_every_call():
  plain = _environ_without_tunables()
  temp_pages, faults = _faults(plain)
  assert temp_pages >= 16_000
  # Without the tunable each call faults its whole buffer in again (this is what the
  # module works around: if it stops holding, the workaround may be obsolete).
  assert min(faults) >= temp_pages / 2, (temp_pages, faults)
  _, faults = _faults(environ_with_huge_pages({**plain, "JAX_PLATFORMS": "cpu"}))
  assert max(faults) < temp_pages / 8, (temp_pages, faults)        # 2 MiB pages: ~32
