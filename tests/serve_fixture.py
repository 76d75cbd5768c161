"""Start `launch/serve.py` on a free 127.0.0.1 port for a test, and stop it afterwards.

The server binds port 0 itself and prints the port the system gave it, so no other process
can take the port between choosing it and binding it.
"""

import contextlib
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = re.compile(r"^serving .* on http://127\.0\.0\.1:(\d+)$")


class _Output:
  """Reads the server's output on a thread (a full pipe never stalls it); keeps every line."""

  def __init__(self, stream):
    self.lines: list[str] = []
    self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      self.lines.append(line)

  def port(self) -> int | None:
    """The port from the "serving ... on http://127.0.0.1:PORT" line, once printed."""
    for line in list(self.lines):
      m = SERVING.match(line.strip())
      if m:
        return int(m[1])
    return None

  def text(self, wait_s: float = 0.0) -> str:
    self._thread.join(wait_s)
    return "".join(self.lines)[-3000:]


@contextlib.contextmanager
def serve(model_dir, *extra_args: str, timeout_s: float = 120.0):
  """Yields (base url without /v1, the server process) once /health answers 200."""
  # As the trainer starts servers: weight routes on (vLLM's dev mode); strict, so a request
  # field vLLM would silently ignore fails the test instead.
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "VLLM_SERVER_DEV_MODE": "1"}
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "serve.py"),
                           f"--model_dir={model_dir}", "--host=127.0.0.1", "--port=0",
                           "--strict", *extra_args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = _Output(proc.stdout)
  deadline = time.time() + timeout_s
  try:
    url = None
    while True:
      if url is None and output.port() is not None:
        url = f"http://127.0.0.1:{output.port()}"
      if url is not None:
        try:
          if httpx.get(url + "/health", timeout=1).status_code == 200:
            break
        except httpx.HTTPError:
          pass
      if proc.poll() is not None:
        pytest.fail(f"launch/serve.py exited ({proc.returncode}): {output.text(5)}")
      if time.time() > deadline:
        pytest.fail(f"launch/serve.py did not come up in {timeout_s:.0f} s: {output.text()}")
      time.sleep(0.2)
    yield url, proc
  finally:
    proc.kill()
    proc.wait()
