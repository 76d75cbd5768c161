"""Start `launch/serve.py` on a free 127.0.0.1 port for a test, and stop it afterwards."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serve(model_dir, *extra_args: str, timeout_s: float = 120.0):
  """Yields (base url without /v1, the server process) once /health answers 200."""
  port = free_port()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "serve.py"),
                           f"--model_dir={model_dir}", f"--port={port}", *extra_args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + timeout_s
  try:
    while True:
      try:
        if httpx.get(url + "/health", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        time.sleep(0.2)
      if proc.poll() is not None:
        pytest.fail(f"launch/serve.py exited: {proc.stdout.read()[-3000:]}")
      if time.time() > deadline:
        pytest.fail(f"launch/serve.py did not come up in {timeout_s:.0f} s")
    yield url, proc
  finally:
    proc.kill()
    proc.wait()
