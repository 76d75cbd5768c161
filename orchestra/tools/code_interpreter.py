"""`code_interpreter`: runs model-written Python in a sandboxed subprocess.

Each call gets a fresh temporary working directory (deleted afterwards) and a
fresh `python -I -B -u` process started with asyncio, so many calls run
concurrently without blocking the event loop. The code travels on stdin; a
small child program (`sandbox_child.py`) sets up layers 2-5 and then
`exec`s the code as `__main__`. The layers, outermost first:

1. Parent side: a minimal environment (never `os.environ`, so no API keys), a
   new session whose process group is SIGKILLed on wall-clock timeout, on
   cancellation and after every run, and stdout/stderr read incrementally and
   kept to `max_output_chars` (head and tail), so floods cannot exhaust memory.
2. rlimits (kernel): CPU seconds, address space (`memory_mb`), size of each
   written file (`max_file_mb`), no core dumps (not dumpable), 256 open files,
   64 queued signals (the queue is counted per user: uid 0's is every root
   process's);
   and, where cgroup v1's pids hierarchy is writable, a pids cgroup of the
   call's own, inside the caller's, capping its processes and threads at 64
   (RLIMIT_NPROC never binds uid 0).
3. Linux namespaces (kernel), where the kernel allows them. As root: a private
   mount namespace in which every mount except the working directory is
   remounted read-only and without devices; the working directory is a tmpfs
   of its own (twice `max_file_mb`, 4096 inodes, no setuid, devices or exec:
   the code's files never reach the host's disk) alone in its folder
   (`sandbox_root`: concurrent calls' directories are hidden under an empty
   tmpfs); /dev is a read-only tmpfs with only null, zero, full, random and
   urandom (bound read-only from the host's: their mode and times are the
   host's), the /proc/self/fd links and a 16 MB /dev/shm of its
   own (POSIX semaphores for thread pools): a device node opens for writing
   under a read-only mount, and the host's /dev has the kernel log, loop
   devices, terminals and disks; an IPC namespace (SysV IPC and POSIX message
   queues of its own, gone with it); a network namespace with no interface
   up; then the
   child becomes uid/gid 65534 (nobody; the working directory is handed to it,
   RLIMIT_NPROC 64), and enters a user namespace, which drops all capabilities
   over the host (the mounts cannot be undone; other processes'
   `/proc/<pid>/environ` and `mem` become unreadable). The drop to nobody is
   what stops signals to root's processes (a user namespace keeps the kernel
   uid 0, and `pidfd_send_signal` is not audited), writes to device nodes and
   reads of root's files; it is skipped where nobody could not read the
   standard library (a Python installed under /root, as on the development
   machine) or reach the working directory. As non-root: a user, network and
   IPC namespace (file permissions already stop writes). A step that fails (e.g. a
   container without CAP_SYS_ADMIN, or user namespaces disabled) is skipped
   silently.
4. Landlock (kernel >= 5.13, where enabled): every write, create, remove,
   rename, link and truncation outside the working directory and /dev/shm is
   refused, and every write open of another file than null, zero, full,
   random and urandom: FIFOs and device nodes on any mount, paths given
   through `dir_fd` (which the audit hook does not see). Its ptrace scoping
   also closes other processes' ptrace-checked /proc entries (environ, mem,
   maps, fd, cwd, root; not cmdline or status).
   Then a seccomp filter (x86_64, after no_new_privs; skipped elsewhere or
   where the kernel refuses it): fork, vfork, exec and `clone` other than a
   thread in the same namespaces fail with EPERM, as do `socket` (all
   families: filesystem Unix sockets cross namespaces; `socketpair` AF_UNIX
   streams, which asyncio uses, remain), signals (`kill`, `tgkill`) to other
   processes, fd signal owners (`fcntl` F_SETOWN/F_SETSIG/F_SETOWN_EX, `ioctl`
   FIOSETOWN/SIOCSPGRP: the kernel would signal the owner, any process of the
   uid), file leases (F_SETLEASE stalls others' opens), terminal input
   (TIOCSTI, TIOCLINUX), loop-device setup, `prlimit64`, `setpriority` and
   `sched_set*` on other processes, SysV IPC and POSIX message queues,
   inotify (its instances and watches are counted per user),
   `ptrace`, `process_vm_*`, the pidfd calls, `memfd_create`,
   `userfaultfd`, io_uring, bpf, perf events, mounts and namespaces
   (`unshare`, `setns`), file handles (`open_by_handle_at`), device nodes,
   keyrings, modules, reboot and clock setting (`sandbox_child.REFUSED_SYSCALLS`).
   Python code can lift neither, so what the hook below refuses of these holds
   even against code that subverts the hook.
5. An audit hook (`sys.addaudithook`; Python code cannot remove it) that raises
   `PermissionError("blocked: ...")` on: non-AF_UNIX sockets, connect, bind,
   sendto and DNS look-ups; fork, exec, spawn, system and Popen (plus what
   CPython does not audit, replaced in the child: `_posixsubprocess.fork_exec`,
   `os.pidfd_open`, `signal.pidfd_send_signal` and `os.memfd_create`, with any
   new import of their modules, under any name, refused); setting the
   `__code__` of the child program's functions or of the path functions its
   checks use (other code may: `types.coroutine` does, on importing asyncio);
   the `fcntl`/`ioctl` commands the filter refuses; writes, deletes, renames, links,
   chmods etc. whose real path (symlinks and `dir_fd`s resolved) is outside
   the working directory; opening another process's `/proc/<pid>/...`, also
   through a symlink or a magic link such as `/proc/<pid>/fd/N`; ctypes
   library loading (except libraries inside the Python installation, which
   torch needs), symbol look-up, foreign calls and raw memory access; `gc`
   object enumeration; signals to other processes, also through an fd's
   signal owner; and `resource.prlimit` of other processes (`os.setpriority`
   and `os.sched_set*`, not audited, are replaced by versions that refuse other
   processes).

What is NOT protected:
- Reads: the code can read any file its process can; where the child keeps
  uid 0 (no drop to nobody, see layer 3) that includes secrets such as
  `/root/.ssh`, and where the seccomp filter is missing (not x86_64) it can
  signal root's processes by uid match. It can also take `flock`/`fcntl`
  locks on files it can open, which stalls other processes waiting for them
  until the run ends (sqlite needs locks in the working directory). Without
  a mount namespace (no CAP_SYS_ADMIN) /dev is the host's (Landlock still
  refuses writes to it).
- Process count: RLIMIT_NPROC never binds uid 0 and is set only after the drop
  to nobody; for a non-root trainer it would count all the user's threads (a
  JAX trainer has many). Otherwise the hook and, on x86_64, the seccomp filter
  stop forks; a process that escaped both and called `setsid` would also escape
  the timeout's kill.
- The audit hook is a tripwire against mistakes, not a security boundary (PEP
  578 says so): its checks are Python code that deliberate code can subvert
  (walking frames to the child program's globals, rebinding a closure cell of
  its checks, monkeypatching the stdlib functions `os.path.realpath` relies
  on), and CPython's `open` event does not
  report `dir_fd`, so `os.open(name, flags, dir_fd=fd)` evades its write check.
  Against such code only layers 2-4 hold, and layers 3 and 4 are not
  available everywhere (without Landlock, writes outside the working
  directory have no kernel guard but the read-only mounts; without seccomp,
  filesystem Unix sockets such as Docker's are refused only by the hook's
  `connect` check).
- Threads, where there is no writable cgroup-v1 pids hierarchy (cgroup v2
  without a delegated subtree): a child that keeps uid 0 is exempt from
  RLIMIT_NPROC, so only its address space bounds its threads: a review started
  ~23,000 in one run at the default 1 GB (small stacks), and two such runs
  would exhaust a pid_max of 32768 for the whole machine.
- Memory in other forms than the address space (the working directory's
  tmpfs, up to twice `max_file_mb`; pipe and socket buffers), total disk use
  where there is no mount namespace (only each file's size is capped), and
  CPU/memory/time within the limits; no memory cgroup or PID namespace. For
  hostile code use a VM, gVisor or nsjail instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from orchestra.tools.base import Tool, ToolConfigError, ToolResult

PIDS_CGROUP_ROOT = "/sys/fs/cgroup/pids"     # cgroup v1's pids hierarchy
MAX_TASKS_PER_CALL = 64                      # processes and threads of one call

PRICE_PER_SECOND = 0.0000083   # USD per second of code execution (ToolOrchestra paper)
_DRAIN_S = 2.0                 # after a kill, how long to wait for the pipes to close
_READ_CHUNK = 1 << 16

# The child program: a real file, run as `python -I -B -u CHILD_PROGRAM WORKDIR CPU_S MEMORY
# FILE_BYTES` with the user code on stdin (see sandbox_child.py).
CHILD_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")


def _remove_tree(path: str) -> None:
  """Deletes a finished call's working directory, however deep the code nested folders in it
  (`shutil.rmtree` recurses: 1,500 levels raised RecursionError and left the folder)."""
  try:
    shutil.rmtree(path, ignore_errors=True)
  except RecursionError:
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False)


def _pids_cgroup() -> str | None:
  """A fresh cgroup-v1 pids group capping one call's tasks (threads included) at
  `MAX_TASKS_PER_CALL`, which the child joins first: a child that keeps kernel uid 0 is
  exempt from RLIMIT_NPROC, and a review started ~23,000 threads in one run (two such runs
  exhaust a pid_max of 32768). None where there is no such hierarchy this process may
  write (cgroup v2 needs a delegated subtree; not handled). The group is made inside this
  process's own pids group, so an outer cap (a systemd service's TasksMax) still binds."""
  parent = _own_pids_cgroup()
  if parent is None or not os.access(parent, os.W_OK):
    return None
  path = os.path.join(parent, f"orchestra_code_{uuid.uuid4().hex}")
  try:
    os.mkdir(path)
    with open(os.path.join(path, "pids.max"), "w") as f:
      f.write(str(MAX_TASKS_PER_CALL))
  except OSError:
    _remove_cgroup(path)
    return None
  return path


def _own_pids_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
  """This process's folder in the cgroup-v1 pids hierarchy (`N:pids:/path` in
  /proc/self/cgroup), or None without one."""
  try:
    with open(proc_cgroup) as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  for line in lines:
    _, controllers, path = line.split(":", 2)
    if "pids" in controllers.split(","):
      return os.path.join(PIDS_CGROUP_ROOT, path.lstrip("/"))
  return None


def _remove_cgroup(path: str) -> None:
  """Removes a finished call's cgroup once its last task has gone (a killed group's tasks
  take a moment to leave)."""
  for _ in range(200):
    try:
      os.rmdir(path)
      return
    except FileNotFoundError:
      return
    except OSError:
      time.sleep(0.01)


def sandbox_root() -> str:
  """The folder each call's working directory is made in: one per user under the system's
  temporary folder, mode 0711 (others may enter, not list). The child hides its other
  entries, concurrent calls' working directories, under an empty tmpfs. A folder of that
  name that is not this user's own, or that others may write to, is not used: the
  temporary folder itself is, then."""
  root = os.path.join(tempfile.gettempdir(), f"orchestra_sandboxes_{os.getuid()}")
  try:
    os.mkdir(root, 0o700)
    os.chmod(root, 0o711)
  except FileExistsError:
    pass
  info = os.lstat(root)
  if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
    return tempfile.gettempdir()
  return root


def _sandbox_env(workdir: str) -> dict[str, str]:
  """The child's whole environment: nothing inherited (`-I` ignores PYTHON* variables anyway)."""
  return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir,
          "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
          "MKL_NUM_THREADS": "1"}


class _Capture:
  """Keeps the first and the last few KB of a stream, and counts its bytes."""

  def __init__(self, max_chars: int):
    self.max_chars = max_chars
    self.limit = 4 * max_chars    # bytes kept at each end: enough for max_chars of UTF-8
    self.head, self.tail, self.size = bytearray(), bytearray(), 0

  def feed(self, chunk: bytes) -> None:
    """Adds a chunk, forgetting the middle once both ends are full."""
    self.size += len(chunk)
    take = max(0, self.limit - len(self.head))
    self.head += chunk[:take]
    self.tail += chunk[take:]
    del self.tail[:-self.limit]

  def text(self, head_share: float) -> str:
    """At most `max_chars` characters: a `head_share` from the start, the rest from the end."""
    if self.size == len(self.head) + len(self.tail):
      first = last = (self.head + self.tail).decode(errors="replace")
      if len(first) <= self.max_chars:
        return first
    else:
      first, last = self.head.decode(errors="replace"), self.tail.decode(errors="replace")
    n_head = int(self.max_chars * head_share)
    n_tail = self.max_chars - n_head
    note = (f"\n[... output truncated: {self.size} bytes in all,"
            f" {self.max_chars} characters shown ...]\n")
    return first[:n_head] + note + (last[-n_tail:] if n_tail else "")


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
  """Writes `data` to the child's stdin and closes it; a child that died early is fine."""
  try:
    stream.write(data)
    await stream.drain()
    stream.close()
  except (BrokenPipeError, ConnectionResetError):
    pass


async def _drain(stream: asyncio.StreamReader, capture: _Capture) -> None:
  """Reads a pipe to its end into `capture`."""
  while chunk := await stream.read(_READ_CHUNK):
    capture.feed(chunk)


async def _finished_within(future: asyncio.Future, timeout_s: float) -> bool:
  """Waits up to `timeout_s` for `future` without cancelling it; True if it finished."""
  try:
    await asyncio.wait_for(asyncio.shield(future), timeout_s)
    return True
  except TimeoutError:
    return False


def _kill_group(pgid: int) -> None:
  """SIGKILLs every process left in the child's session (its process group)."""
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _last_line(text: str) -> str:
  """The last non-blank line (a traceback's exception line), shortened."""
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1].strip()[:300] if lines else ""


@dataclasses.dataclass
class _Outcome:
  """What one run of the child produced."""

  returncode: int
  timed_out: bool
  wall_s: float
  stdout: str
  stderr: str


class CodeInterpreter(Tool):
  """Runs Python code in a sandboxed subprocess; see the module docstring for the sandbox."""

  name = "code_interpreter"

  def __init__(self, timeout_s: float = 10.0, cpu_time_s: float | None = None,
               memory_mb: int = 1024, max_output_chars: int = 4000, max_file_mb: int = 64,
               price_per_second: float = PRICE_PER_SECOND, python: str = sys.executable):
    cpu_time_s = timeout_s if cpu_time_s is None else cpu_time_s
    for field, value in [("timeout_s", timeout_s), ("cpu_time_s", cpu_time_s),
                         ("memory_mb", memory_mb), ("max_output_chars", max_output_chars),
                         ("max_file_mb", max_file_mb)]:
      if not value > 0:
        raise ToolConfigError(f"code_interpreter: {field} must be > 0, got {value!r}")
    if price_per_second < 0:
      raise ToolConfigError(f"code_interpreter: price_per_second must be >= 0, "
                            f"got {price_per_second!r}")
    self.timeout_s, self.cpu_time_s = float(timeout_s), math.ceil(cpu_time_s)
    self.memory_mb, self.max_file_mb = memory_mb, max_file_mb
    self.max_output_chars, self.price_per_second, self.python = (
        max_output_chars, price_per_second, python)
    self.parameters = {
        "type": "object",
        "properties": {"code": {"type": "string",
                                "description": "A complete Python 3 program; print() results."}},
        "required": ["code"],
        "additionalProperties": False,
    }
    self.description = (
        "Runs a Python 3 program in a fresh sandbox and returns its exit status, stdout and "
        "stderr; print() the results you need. Nothing persists between calls. Limits: "
        f"{self.timeout_s:g} s, {memory_mb} MB of memory, output cut to {max_output_chars} "
        "characters; no network, no subprocesses, only the working directory is writable.")

  async def run(self, args: dict[str, Any]) -> ToolResult:
    """Runs `args["code"]` in a fresh temporary directory and reports how it went."""
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="orchestra_code_", dir=sandbox_root()))
    cgroup = _pids_cgroup()
    try:
      outcome = await self._execute(args["code"], workdir, cgroup)
    finally:
      await asyncio.to_thread(_remove_tree, workdir)
      if cgroup:
        await asyncio.to_thread(_remove_cgroup, cgroup)
    status, error = self._diagnose(outcome)
    text = f"{status}\nstdout:\n{outcome.stdout or '(empty)'}"
    if outcome.stderr:
      text += f"\nstderr:\n{outcome.stderr}"
    return ToolResult(text=text, error=error, cost_usd=outcome.wall_s * self.price_per_second,
                      latency_s=outcome.wall_s,
                      usage={"exit_code": outcome.returncode, "wall_s": outcome.wall_s})

  async def _execute(self, code: str, workdir: str, cgroup: str | None) -> _Outcome:
    """Runs the child program on `code` in `workdir` (in `cgroup`, if any); kills its
    process group when done."""
    limits = [str(self.cpu_time_s), str(int(self.memory_mb * 2**20)),
              str(int(self.max_file_mb * 2**20)), cgroup or ""]
    stdout, stderr = _Capture(self.max_output_chars), _Capture(self.max_output_chars)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        self.python, "-I", "-B", "-u", CHILD_PROGRAM, workdir, *limits,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=workdir, env=_sandbox_env(workdir),
        start_new_session=True)
    done = asyncio.gather(_feed(proc.stdin, code.encode(errors="replace")),
                          _drain(proc.stdout, stdout), _drain(proc.stderr, stderr), proc.wait())
    try:
      timed_out = not await _finished_within(done, self.timeout_s)
    finally:
      _kill_group(proc.pid)
    wall_s = time.perf_counter() - start
    if not await _finished_within(done, _DRAIN_S):   # something outside the group holds a pipe
      done.cancel()
    return _Outcome(returncode=await proc.wait(), timed_out=timed_out, wall_s=wall_s,
                    stdout=stdout.text(head_share=0.5), stderr=stderr.text(head_share=0.0))

  def _diagnose(self, outcome: _Outcome) -> tuple[str, str | None]:
    """A status line for the observation and the short `error` (None on success)."""
    code = outcome.returncode
    if outcome.timed_out:
      return f"timed out after {self.timeout_s:g} s (killed)", "timeout"
    if code == -signal.SIGXCPU:
      return f"killed: cpu time limit of {self.cpu_time_s} s exceeded", "cpu time limit exceeded"
    if code < 0:
      name = signal.Signals(-code).name if -code in set(signal.Signals) else f"#{-code}"
      return f"killed by signal {name}", f"killed by signal {name}"
    status = f"exit code {code}"
    if code == 0:
      return status, None
    last = _last_line(outcome.stderr)
    if last.startswith("MemoryError"):
      return f"{status} (memory limit of {self.memory_mb} MB exceeded)", "memory limit exceeded"
    if last.startswith("PermissionError: blocked: "):
      return status, last.removeprefix("PermissionError: ")
    return status, f"{status}: {last}" if last else status
