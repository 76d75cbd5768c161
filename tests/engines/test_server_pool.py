"""LocalServer.stop: the whole process group goes, even after its leader has exited."""

import os
import subprocess
import time

from orchestra.engines.server_pool import LocalServer, ServerSpec


def test_stop_ends_a_worker_that_outlived_the_server_process(tmp_path):
  """A server whose main process exited but left a worker (vLLM's engine core holding the
  accelerator, say): stop() used to return at once because the main process was gone."""
  server = LocalServer(ServerSpec("orchestra", "policy", str(tmp_path)), 0)
  pid_file = tmp_path / "worker.pid"
  server.proc = subprocess.Popen(["sh", "-c", f"sleep 300 & echo $! > {pid_file}"],
                                 start_new_session=True)
  server.proc.wait(10)
  deadline = time.monotonic() + 10
  while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
    time.sleep(0.01)
  worker = int(pid_file.read_text())
  os.kill(worker, 0)                                       # alive, in the server's group
  server.stop(grace_s=5)
  time.sleep(0.2)                   # the worker was reparented: init reaps it, not us
  try:
    with open(f"/proc/{worker}/stat") as f:
      state = f.read().split(")")[-1].split()[0]
  except FileNotFoundError:
    state = "gone"
  assert state in ("gone", "Z", "X")


def test_stop_does_not_wait_on_a_member_left_as_our_zombie(tmp_path):
  """In a container whose PID 1 is the trainer, a server's orphaned workers become the
  trainer's children: once killed they stay zombies until it reaps them, and stop() used to
  wait out both grace periods (10 + 30 s) on them."""
  server = LocalServer(ServerSpec("orchestra", "policy", str(tmp_path)), 0)
  server.proc = subprocess.Popen(["sleep", "300"], process_group=0)   # its own group
  member = subprocess.Popen(["sleep", "300"], process_group=server.proc.pid)   # our child
  start = time.monotonic()
  server.stop(grace_s=10)
  assert time.monotonic() - start < 5
  assert server.proc.poll() is not None
  assert member.poll() is not None or not os.path.exists(f"/proc/{member.pid}")
