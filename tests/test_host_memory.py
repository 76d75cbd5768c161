"""The host allocator for XLA:CPU's per-call buffers (`orchestra/host_memory.py`): which
environment each choice gives, the restart keeping PID and arguments, and the page faults
each allocator saves, counted (not timed) in child processes."""

import json
import os
import subprocess
import sys

import pytest

from orchestra import host_memory
from orchestra.host_memory import (CHOICE_VAR, PRELOAD_VAR, TUNABLES_VAR,
                                   host_allocator_environ, mimalloc_library)

CPU = {"JAX_PLATFORMS": "cpu"}
HUGE_PAGES = host_allocator_environ({**CPU, CHOICE_VAR: "hugetlb"}) is not None
needs_huge_pages = pytest.mark.skipif(
    not HUGE_PAGES, reason="no glibc >= 2.35 with transparent huge pages on this machine")
needs_mimalloc = pytest.mark.skipif(mimalloc_library() is None,
                                    reason="the cmeel-mimalloc wheel is not installed")


@pytest.fixture
def huge_pages_available(monkeypatch):
  monkeypatch.setattr(host_memory, "_huge_pages_available", lambda: True)


@pytest.fixture
def mimalloc_at(monkeypatch):
  monkeypatch.setattr(host_memory, "mimalloc_library", lambda: "/lib/libmimalloc.so")
  return "/lib/libmimalloc.so"


def test_auto_preloads_mimalloc_first_with_a_longer_purge_delay(mimalloc_at):
  assert host_allocator_environ({**CPU, "PATH": "/bin"}) == {
      **CPU, "PATH": "/bin", PRELOAD_VAR: mimalloc_at, "MIMALLOC_PURGE_DELAY": "10000"}
  env = host_allocator_environ({**CPU, PRELOAD_VAR: "/lib/libother.so",
                                "MIMALLOC_PURGE_DELAY": "-1"})            # the user's
  assert env[PRELOAD_VAR] == f"{mimalloc_at}:/lib/libother.so"
  assert env["MIMALLOC_PURGE_DELAY"] == "-1" and TUNABLES_VAR not in env


def test_without_mimalloc_auto_falls_back_to_huge_pages(monkeypatch, huge_pages_available):
  monkeypatch.setattr(host_memory, "mimalloc_library", lambda: None)
  assert host_allocator_environ({**CPU, "PATH": "/bin"}) == {
      **CPU, "PATH": "/bin", TUNABLES_VAR: "glibc.malloc.hugetlb=1"}
  env = host_allocator_environ({**CPU, TUNABLES_VAR: "glibc.malloc.arena_max=2"})
  assert env[TUNABLES_VAR] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  with pytest.raises(ValueError, match="the cmeel-mimalloc package is not installed"):
    host_allocator_environ({**CPU, CHOICE_VAR: "mimalloc"})


def test_hugetlb_is_chosen_by_name(mimalloc_at, huge_pages_available):
  env = host_allocator_environ({**CPU, CHOICE_VAR: "hugetlb"})
  assert env[TUNABLES_VAR] == "glibc.malloc.hugetlb=1" and PRELOAD_VAR not in env


def test_an_unknown_choice_is_named(mimalloc_at):
  with pytest.raises(ValueError, match="ORCHESTRA_HOST_ALLOCATOR='jemalloc': expected one of"):
    host_allocator_environ({**CPU, CHOICE_VAR: "jemalloc"})


@pytest.mark.parametrize("environ", [
    {**CPU, PRELOAD_VAR: "/opt/x/libmimalloc.so.3"},                      # already restarted
    {**CPU, CHOICE_VAR: "hugetlb", TUNABLES_VAR: "glibc.malloc.hugetlb=0"},  # the user's
    {**CPU, CHOICE_VAR: "hugetlb", TUNABLES_VAR: "glibc.malloc.hugetlb=1"},  # restarted
    {**CPU, CHOICE_VAR: "system"},
    {"JAX_PLATFORMS": "cuda"},
    {"JAX_PLATFORMS": "tpu,cpu"},
])
def test_nothing_changes_when_in_place_opted_out_or_on_an_accelerator(
    mimalloc_at, huge_pages_available, environ):
  assert host_allocator_environ(environ) is None


def test_without_kernel_support_huge_pages_change_nothing(monkeypatch, tmp_path):
  never = tmp_path / "enabled"
  never.write_text("always madvise [never]\n")
  monkeypatch.setattr(host_memory, "THP_MODE_FILE", str(never))
  assert host_allocator_environ({**CPU, CHOICE_VAR: "hugetlb"}) is None
  monkeypatch.setattr(host_memory, "THP_MODE_FILE", str(tmp_path / "absent"))
  assert host_allocator_environ({**CPU, CHOICE_VAR: "hugetlb"}) is None


@pytest.mark.parametrize("answer", ["glibc 2.31", "musl 1.2", None, ValueError("no name")])
def test_without_glibc_2_35_huge_pages_change_nothing(monkeypatch, answer):
  def confstr(name):
    assert name == "CS_GNU_LIBC_VERSION"
    if isinstance(answer, Exception):
      raise answer
    return answer
  monkeypatch.setattr(host_memory.os, "confstr", confstr)
  assert host_allocator_environ({**CPU, CHOICE_VAR: "hugetlb"}) is None


@needs_mimalloc
def test_the_installed_library_is_found():
  path = mimalloc_library()
  assert os.path.basename(path) == "libmimalloc.so" and os.path.isfile(path)


def _plain_environ(**extra) -> dict[str, str]:
  """This process's environment less what conftest.py may have added, plus `extra`."""
  drop = {TUNABLES_VAR, PRELOAD_VAR, CHOICE_VAR, "MIMALLOC_PURGE_DELAY"}
  return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


RESTARTING = """
import os, sys
print("start", os.getpid(), os.environ.get("LD_PRELOAD"), sys.argv[1:], flush=True)
from orchestra.host_memory import reexec_with_host_allocator
reexec_with_host_allocator()
print("after", os.getpid(), os.environ.get("LD_PRELOAD"), sys.argv[1:])
"""


@needs_mimalloc
def test_the_restart_keeps_pid_and_arguments_and_happens_once(tmp_path):
  script = tmp_path / "script.py"
  script.write_text(RESTARTING)
  out = subprocess.run([sys.executable, str(script), "--flag=1", "two words"],
                       env=_plain_environ(JAX_PLATFORMS="cpu"), capture_output=True,
                       text=True, timeout=60, check=True).stdout
  first, second, after = out.splitlines()
  pid, library = first.split()[1], mimalloc_library()
  assert first == f"start {pid} None ['--flag=1', 'two words']"
  assert second == f"start {pid} {library} ['--flag=1', 'two words']"
  assert after == f"after {pid} {library} ['--flag=1', 'two words']"


@needs_mimalloc
def test_a_program_that_cannot_be_read_again_is_not_restarted():
  out = subprocess.run([sys.executable, "-c", RESTARTING],
                       env=_plain_environ(JAX_PLATFORMS="cpu"), capture_output=True,
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


@pytest.mark.parametrize("choice, most", [
    pytest.param("mimalloc", 1 / 64, marks=needs_mimalloc),         # the pages stay: ~0
    pytest.param("hugetlb", 1 / 8, marks=needs_huge_pages),         # 2 MiB pages: ~32
])
def test_the_allocator_spares_the_faults_of_every_call(choice, most):
  plain = _plain_environ(**{CHOICE_VAR: "system"})
  temp_pages, faults = _faults(plain)
  assert temp_pages >= 16_000
  # With glibc as it is each call faults its whole buffer in again (this is what the
  # module works around: if it stops holding, the workaround may be obsolete).
  assert min(faults) >= temp_pages / 2, (temp_pages, faults)
  _, faults = _faults(host_allocator_environ(_plain_environ(JAX_PLATFORMS="cpu",
                                                            **{CHOICE_VAR: choice})))
  assert max(faults) < temp_pages * most, (choice, temp_pages, faults)
