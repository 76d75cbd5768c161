"""The persistent compilation cache: a second process loads what the first compiled, the
default folder follows the environment, and a folder that cannot be used is refused."""

import json
import os
import subprocess
import sys

import pytest

from orchestra import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles one program (a few seconds of unrolled matmuls, so it passes MIN_COMPILE_S)
# with the cache in argv[1] and prints how many persistent-cache hits and misses it saw.
COMPILE_ONCE = """
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from orchestra import compilation_cache
seen = {"hits": 0, "misses": 0}
def count(event, **kw):
  if event == "/jax/compilation_cache/cache_hits": seen["hits"] += 1
  if event == "/jax/compilation_cache/cache_misses": seen["misses"] += 1
monitoring.register_event_listener(count)
print(compilation_cache.enable(sys.argv[1], min_compile_s=0.0))
@jax.jit
def f(x):
  for i in range(40):
    x = jnp.tanh(x @ x.T + i) * jnp.cos(x)
  return x.sum()
print(float(f(jnp.ones((16, 16)))))
print(json.dumps(seen))
"""


def run_compile_once(cache_dir):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  env.pop(compilation_cache.ENV_VAR, None)
  out = subprocess.run([sys.executable, "-c", COMPILE_ONCE, cache_dir], capture_output=True,
                       text=True, env=env, timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  enabled, value, seen = out.stdout.strip().splitlines()[-3:]
  return enabled == "True", float(value), json.loads(seen)


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
  cache_dir = str(tmp_path / "xla")
  enabled, first_value, first = run_compile_once(cache_dir)
  assert enabled and first["hits"] == 0 and first["misses"] >= 1
  assert any(name.startswith("jit_f-") for name in os.listdir(cache_dir))
  enabled, second_value, second = run_compile_once(cache_dir)
  assert second["hits"] >= 1 and second["misses"] == 0
  assert second_value == first_value


def test_an_empty_folder_name_turns_the_cache_off(tmp_path):
  enabled, _, seen = run_compile_once("")
  assert not enabled and seen == {"hits": 0, "misses": 0}


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / "mine"))
  assert compilation_cache.default_dir() == str(tmp_path / "mine")
  monkeypatch.setenv(compilation_cache.ENV_VAR, "")
  assert compilation_cache.default_dir() == ""
  monkeypatch.delenv(compilation_cache.ENV_VAR)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  assert compilation_cache.default_dir() == str(tmp_path / "cache" / "orchestra" / "xla")


def test_the_minimum_compile_time_follows_jaxs_variable(monkeypatch):
  name = compilation_cache.MIN_COMPILE_ENV_VAR
  monkeypatch.delenv(name, raising=False)
  assert compilation_cache.min_compile_seconds() == compilation_cache.MIN_COMPILE_S
  for text, seconds in (("0", 0.0), (" 1.5 ", 1.5), ("", compilation_cache.MIN_COMPILE_S)):
    monkeypatch.setenv(name, text)
    assert compilation_cache.min_compile_seconds() == seconds
  for bad in ("-1", "soon", "nan"):
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError, match=f"{name}='{bad}': expected seconds"):
      compilation_cache.min_compile_seconds()


def test_a_folder_that_is_a_file_is_refused_with_the_way_out(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("")
  with pytest.raises(OSError, match=r"--compilation_cache= turns the cache off"):
    compilation_cache.enable(str(a_file / "xla"))


@pytest.mark.slow
def test_launch_train_names_an_unusable_cache_folder_or_minimum(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={os.path.join(ROOT, 'configs', 'tiny_cpu.py')}",
                        f"--workdir={tmp_path / 'run'}", f"--compilation_cache={a_file}"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 2
  assert f"train.py: error: compilation cache {a_file}" in out.stderr
  assert not (tmp_path / "run").exists()
  env[compilation_cache.MIN_COMPILE_ENV_VAR] = "-1"
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                        f"--config={os.path.join(ROOT, 'configs', 'tiny_cpu.py')}",
                        f"--workdir={tmp_path / 'run'}", f"--compilation_cache={tmp_path}"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 2
  assert (f"train.py: error: {compilation_cache.MIN_COMPILE_ENV_VAR}='-1': expected seconds"
          in out.stderr)
  assert not (tmp_path / "run").exists()
