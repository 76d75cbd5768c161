"""Rollout servers a run starts itself: healthy before use, restarted when one dies, never orphaned.

`LocalServers(spec, n)` starts n servers on one exported Hugging Face folder:
`launch/serve.py` (`spec.kind = "orchestra"`, JAX on CPU or GPU) or `vllm serve` with the
flags of `vllm_serve_command` (`"vllm"`, GPU). Each is ready when `GET /health` answers 200.

No orphan on any exit path: `stop()` runs on context exit (normal end, exception, Ctrl-C,
and SIGTERM once `launch/train.py` turns it into `SystemExit`); it sends SIGTERM to each
server's process group, then SIGKILL after a grace period. Each server also runs with
`PR_SET_PDEATHSIG` (Linux), so even a SIGKILLed trainer takes its servers with it.
Server output goes to `spec.log_dir/server_<i>.log` (files: a full pipe never stalls a server).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import httpx

from orchestra.engines.http_engine import vllm_serve_command

SERVE_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "launch", "serve.py")
SERVING = re.compile(r"^serving .* on (http://\S+)$", re.M)


class ServerLaunchError(RuntimeError):
  """A rollout server that did not start or come up healthy; the message has its log's tail."""


@dataclasses.dataclass(frozen=True)
class ServerSpec:
  """How to start one rollout server.

  kind: "orchestra" (launch/serve.py) or "vllm" (`vllm serve`).
  served_model_name: the model name requests use.
  log_dir: where each server's output goes.
  tensor_parallel_size: vLLM only.
  max_model_len: prompt + generated tokens per request.
  env: extra environment (e.g. the API key variable, dev-mode switches).
  extra_args: more command-line arguments.
  startup_timeout_s: how long a server may take to answer /health.
  """
  kind: str
  served_model_name: str
  log_dir: str
  tensor_parallel_size: int = 1
  max_model_len: int = 32_768
  env: tuple[tuple[str, str], ...] = ()
  extra_args: tuple[str, ...] = ()
  startup_timeout_s: float = 300.0

  def __post_init__(self):
    if self.kind not in ("orchestra", "vllm"):
      raise ValueError(f"server kind={self.kind!r}: expected 'orchestra' or 'vllm'")

  def command(self, model_dir: str) -> tuple[list[str], dict[str, str], str | None]:
    """(argv, extra env, URL) of a server on `model_dir`. The URL is None for "orchestra":
    launch/serve.py binds a free port itself and announces it ("serving ... on URL")."""
    if self.kind == "orchestra":
      return ([sys.executable, SERVE_PY, f"--model_dir={model_dir}", "--host=127.0.0.1",
               "--port=0", f"--served_model_name={self.served_model_name}",
               f"--max_model_len={self.max_model_len}", *self.extra_args],
              {"VLLM_SERVER_DEV_MODE": "1"}, None)
    port = _free_port()
    argv, env = vllm_serve_command(model_dir, port=port,
                                   served_model_name=self.served_model_name,
                                   tensor_parallel_size=self.tensor_parallel_size,
                                   max_model_len=self.max_model_len)
    return argv + list(self.extra_args), env, f"http://127.0.0.1:{port}"


def _free_port() -> int:
  """A port free now (vLLM cannot report one it picked; the race is the OS's to lose)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _die_with_parent() -> None:
  """In the child before exec: SIGTERM when the parent dies (Linux prctl; elsewhere a no-op)."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
  except OSError:
    pass


class LocalServer:
  """One server process; `url` is set once it is healthy."""

  def __init__(self, spec: ServerSpec, index: int):
    self.spec, self.index = spec, index
    self.proc: subprocess.Popen | None = None
    self.url: str | None = None
    self._url: str | None = None             # known before health (vLLM), else announced
    self._deadline = 0.0
    self._log_start = 0                      # where this start's output begins in the log
    self.log_path = os.path.join(spec.log_dir, f"server_{index}.log")

  def start(self, model_dir: str) -> str:
    """Starts the server on `model_dir` and waits until it is healthy; returns its URL."""
    self.launch(model_dir)
    return self.wait_healthy()

  def launch(self, model_dir: str) -> None:
    """Starts the process. Call it from a long-lived thread: PR_SET_PDEATHSIG fires when
    the *thread* that started the child ends."""
    argv, extra_env, self._url = self.spec.command(model_dir)
    env = {**os.environ, **dict(self.spec.env), **extra_env}
    if self.spec.kind == "orchestra":
      env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    os.makedirs(self.spec.log_dir, exist_ok=True)
    self._log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
    with open(self.log_path, "a") as log, warnings.catch_warnings():
      # JAX warns at every fork; this child runs only prctl before exec, never JAX.
      warnings.simplefilter("ignore", RuntimeWarning)
      self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    self.url = None
    self._deadline = time.monotonic() + self.spec.startup_timeout_s

  def wait_healthy(self) -> str:
    """Waits for GET /health to answer 200; the URL. `ServerLaunchError` if it exits or
    times out (the process is stopped then)."""
    url = self._url
    while time.monotonic() < self._deadline:
      url = url or self._announced_url()
      if self.proc.poll() is not None:
        raise ServerLaunchError(f"rollout server {self.index} exited with {self.proc.returncode} "
                                f"while starting: {self.log_tail()}")
      if url and _healthy(url):
        self.url = url
        return url
      time.sleep(0.2)
    self.stop()
    raise ServerLaunchError(f"rollout server {self.index} not healthy after "
                            f"{self.spec.startup_timeout_s:.0f} s: {self.log_tail()}")

  def _announced_url(self) -> str | None:
    """The URL this start announced (a restarted server appends to the same log)."""
    with open(self.log_path) as f:
      f.seek(self._log_start)
      found = SERVING.findall(f.read())
    return found[-1] if found else None

  def alive(self) -> bool:
    return self.proc is not None and self.proc.poll() is None

  def log_tail(self, chars: int = 2000) -> str:
    try:
      with open(self.log_path) as f:
        return f.read()[-chars:]
    except OSError:
      return "(no log)"

  def stop(self, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace_s`, until no process of
    the group is left: also when the server process itself has already exited (a worker
    it started, such as vLLM's engine core, would otherwise keep running and hold its
    accelerator)."""
    if self.proc is None:
      return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
      try:
        os.killpg(self.proc.pid, sig)
      except ProcessLookupError:
        break                                   # the group is empty
      if _group_ends(self.proc, wait_s):
        break


def _group_ends(proc: subprocess.Popen, wait_s: float) -> bool:
  """Whether every process of `proc`'s group (its id is `proc.pid`) exits within `wait_s`.
  Members that are our children are reaped (as when this process is a container's PID 1,
  which inherits orphans), and zombies count as ended."""
  deadline = time.monotonic() + wait_s
  while True:
    proc.poll()                                 # reaps the leader
    _reap_group(proc.pid)
    if not _group_alive(proc.pid):
      return True
    if time.monotonic() >= deadline:
      return False
    time.sleep(0.05)


def _reap_group(pgid: int) -> None:
  """Reaps every exited child of this process in group `pgid`."""
  while True:
    try:
      pid, _ = os.waitpid(-pgid, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return


def _group_alive(pgid: int) -> bool:
  """Whether a process of group `pgid` is running (a zombie only waits to be reaped)."""
  try:
    os.killpg(pgid, 0)
  except ProcessLookupError:
    return False
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
    except (OSError, ValueError):
      continue                                  # exited meanwhile
    if int(group) == pgid and state not in ("Z", "X"):
      return True
  return False


def _healthy(url: str) -> bool:
  try:
    return httpx.get(url + "/health", timeout=2.0).status_code == 200
  except httpx.HTTPError:
    return False


class LocalServers:
  """n `LocalServer`s started together; a context manager that stops them all on exit."""

  def __init__(self, spec: ServerSpec, n: int):
    if n < 1:
      raise ValueError(f"LocalServers needs n >= 1 servers, got {n}")
    self.servers = [LocalServer(spec, i) for i in range(n)]

  def start(self, model_dir: str) -> list[str]:
    """Starts every server on `model_dir` (they load concurrently); their URLs once all
    are healthy."""
    try:
      for server in self.servers:
        server.launch(model_dir)
      return [server.wait_healthy() for server in self.servers]
    except BaseException:
      self.stop()
      raise

  def revive(self, model_dir: str) -> dict[str, str]:
    """Restarts each dead server on `model_dir` (the newest weights); {old URL: new URL}."""
    moved = {}
    for server in self.servers:
      if not server.alive():
        old = server.url
        server.stop()
        moved[old] = server.start(model_dir)
    return moved

  @property
  def urls(self) -> list[str]:
    return [s.url for s in self.servers if s.url]

  def stop(self) -> None:
    for server in self.servers:
      server.stop()

  def __enter__(self) -> "LocalServers":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()
