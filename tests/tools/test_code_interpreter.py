"""code_interpreter: ordinary code works, and every escape attempt becomes an error observation."""

import asyncio
import functools
import importlib.util
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from orchestra.tools import code_interpreter
from orchestra.tools import ToolConfigError, build_tool
from orchestra.tools.code_interpreter import CodeInterpreter

# The child program's steps that set up one layer each (see the module docstring).
KERNEL_LAYER = "isolate(workdir, WORKDIR_FILES * file_bytes)"   # namespaces, mounts, ...
HOOK_LAYER = "install_audit_hook(workdir)"        # the audit-hook tripwire
FORK_GUARD = "refuse_unaudited_calls()"           # fork_exec, pidfd, memfd replaced
SYSCALL_FILTER = "install_syscall_filter()"       # seccomp: the kernel refuses the calls
LANDLOCK = "restrict_writes(workdir)"            # Landlock: writes only in the working directory
NOBODY = 65534


def run(code, **options):
  """Runs `code` through a fresh tool, as a model's tool call would."""
  return asyncio.run(CodeInterpreter(**options)({"code": code}))


def without(monkeypatch, *steps):
  """Leaves child-program steps out of every run in this test, to check the other layers
  alone: runs a copy of sandbox_child.py without those calls."""
  with open(code_interpreter.CHILD_PROGRAM) as f:
    program = f.read()
  for step in steps:
    assert f"\n  {step}\n" in program, f"the child program no longer calls {step}"
    program = program.replace(f"\n  {step}\n", "\n")
  fd, path = tempfile.mkstemp(suffix="_sandbox_child.py", dir=_CHILD_COPIES.name)
  with os.fdopen(fd, "w") as f:
    f.write(program)
  monkeypatch.setattr(code_interpreter, "CHILD_PROGRAM", path)


# The copies `without` writes; the folder is removed when the test process exits.
_CHILD_COPIES = tempfile.TemporaryDirectory(prefix="sandbox-child-copies-")


@functools.cache
def kernel_layer():
  """What layer 3 gives on this machine: (read-only mounts, a user namespace of its own)."""
  probe = run("import os\nprint(bool(os.statvfs('/').f_flag & os.ST_RDONLY), "
              "os.readlink('/proc/self/ns/user'))")
  read_only, user_ns = probe.text.split("stdout:\n")[1].split()[:2]
  return read_only == "True", user_ns != os.readlink("/proc/self/ns/user")


def only(layer, monkeypatch, guards="files"):
  """Sets up `layer` ("both", "hook" or "kernel") for this test, or skips if the kernel layer
  cannot guard `guards` ("files": read-only mounts; "proc": a user namespace) here."""
  if layer == "hook":
    without(monkeypatch, KERNEL_LAYER, LANDLOCK, SYSCALL_FILTER)
  elif layer == "kernel":
    read_only_mounts, user_namespace = kernel_layer()
    if guards == "files" and not read_only_mounts:
      pytest.skip("no mount namespace on this machine (no CAP_SYS_ADMIN?): only the audit "
                  "hook guards files")
    if guards == "proc" and not user_namespace:
      pytest.skip("no user namespace on this machine: only the audit hook guards /proc")
    without(monkeypatch, HOOK_LAYER)


def stdout(result):
  return result.text.split("stdout:\n", 1)[1].split("\nstderr:\n")[0]


def alive(pid):
  """Whether process `pid` exists and is not a zombie (killed, but not yet reaped)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      state = f.read().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state not in ("Z", "X")


def test_print_gives_output_cost_and_latency():
  result = run("print(1+1)")
  assert "2" in result.text.splitlines()
  assert result.error is None
  assert result.cost_usd > 0 and result.latency_s > 0
  assert result.usage["exit_code"] == 0 and result.usage["wall_s"] > 0


def test_build_tool_and_bad_options():
  tool = build_tool({"type": "code_interpreter", "timeout_s": 5})
  assert isinstance(tool, CodeInterpreter) and tool.timeout_s == 5
  assert tool.schema()["function"]["name"] == "code_interpreter"
  with pytest.raises(ToolConfigError):
    build_tool({"type": "code_interpreter", "timeout": 5})
  with pytest.raises(ToolConfigError):
    build_tool({"type": "code_interpreter", "memory_mb": 0})


@pytest.mark.parametrize("args", [{}, {"code": "print(1)", "lang": "py"}, {"code": 1}, "print(1)"])
def test_bad_arguments_give_an_error_result(args):
  result = asyncio.run(CodeInterpreter()(args))
  assert result.error and result.text.startswith("Error")


def test_infinite_loop_is_killed_at_the_wall_clock_timeout():
  """CPU limit far away: only the wall-clock timeout can end it, with SIGKILL."""
  result = run("while True: pass", timeout_s=1, cpu_time_s=60)
  assert result.error == "timeout"
  assert result.usage["exit_code"] == -signal.SIGKILL
  assert result.text.startswith("timed out after 1 s (killed)")


def test_busy_loop_hits_the_cpu_time_limit():
  """Wall clock far away: RLIMIT_CPU ends it with SIGXCPU, reported as the CPU limit."""
  result = run("while True: pass", timeout_s=120, cpu_time_s=1)
  assert result.error == "cpu time limit exceeded"
  assert result.usage["exit_code"] == -signal.SIGXCPU
  assert "cpu time limit of 1 s exceeded" in result.text


def test_timeout_kills_the_whole_process_group(monkeypatch):
  """A child the code forked (here past the hook and the syscall filter, which would refuse
  the fork) dies with it."""
  without(monkeypatch, HOOK_LAYER, FORK_GUARD, SYSCALL_FILTER)
  code = ("import os, time\npid = os.fork()\nif pid == 0:\n  time.sleep(600)\n  os._exit(0)\n"
          "print('child', pid, flush=True)\ntime.sleep(600)")
  result = run(code, timeout_s=2)
  child = int(stdout(result).split()[1])
  try:
    assert result.error == "timeout"
    for _ in range(500):                     # SIGKILL was sent before run() returned
      if not alive(child):
        break
      time.sleep(0.01)
    assert not alive(child), f"the forked child {child} outlived the timeout"
  finally:
    if alive(child):
      os.kill(child, signal.SIGKILL)


def test_writing_past_the_file_size_limit_fails_and_is_reported():
  code = """
import os
with open('small.bin', 'wb') as f:
  f.write(b'x' * (2**20 - 1024))
try:
  with open('big.bin', 'wb') as f:
    f.write(b'x' * (3 * 2**20))
finally:
  print(os.path.getsize('small.bin'), os.path.getsize('big.bin'))
"""
  result = run(code, max_file_mb=1)
  assert result.error == "exit code 1: OSError: [Errno 27] File too large"
  assert stdout(result).split() == [str(2**20 - 1024), str(2**20)]   # cut at exactly 1 MB


def test_huge_allocation_hits_the_memory_limit():
  result = run("x = bytearray(10 * 2**30)")
  assert result.error == "memory limit exceeded"
  assert "MemoryError" in result.text


def test_fork_bomb_is_blocked():
  result = run("import os\nwhile True: os.fork()")
  assert result.error == "blocked: creating processes is not allowed"


def test_subprocess_is_blocked():
  result = run("import subprocess\nsubprocess.run(['echo', 'hi'])")
  assert result.error == "blocked: creating processes is not allowed"


@pytest.mark.parametrize("where", ["pytest_tmp", "tmp"])
def test_writing_outside_the_working_directory_is_blocked(where, tmp_path):
  target = (str(tmp_path / "escape.txt") if where == "pytest_tmp"
            else f"/tmp/escape_{uuid.uuid4().hex}")
  result = run(f"open({target!r}, 'w').write('x')")
  assert result.error and result.error.startswith("blocked: writing outside")
  assert not os.path.exists(target)


def test_write_check_evasion_is_stopped_by_the_read_only_mounts():
  """`os.open(..., dir_fd=)` slips past the audit hook; the kernel layer must stop it, even
  in a folder anyone may write (file permissions would stop it in most others)."""
  probe = run("import os\nprint(bool(os.statvfs('/').f_flag & os.ST_RDONLY))")
  if "True" not in probe.text:
    pytest.skip("no mount namespace on this machine: only the audit hook guards writes")
  with tempfile.TemporaryDirectory(dir="/tmp") as folder:
    os.chmod(folder, 0o777)
    code = (f"import os\nfd = os.open({folder!r}, os.O_RDONLY)\n"
            f"os.open('escape.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)")
    result = run(code)
    assert "Read-only file system" in (result.error or "")
    assert not os.path.exists(os.path.join(folder, "escape.txt"))


def test_deleting_outside_the_working_directory_is_blocked(tmp_path):
  keep = tmp_path / "keep.txt"
  keep.write_text("precious")
  result = run(f"import os, shutil\nos.remove({str(keep)!r})")
  assert result.error and result.error.startswith("blocked: changing files outside")
  assert keep.read_text() == "precious"


def test_parent_environment_is_not_visible(monkeypatch):
  monkeypatch.setenv("ORCHESTRA_SECRET", "s3cr3t")
  result = run("import os\nprint(os.environ.get('ORCHESTRA_SECRET'))\n"
               "print(open(f'/proc/{os.getppid()}/environ').read())")
  assert "s3cr3t" not in result.text
  assert result.error and result.error.startswith("blocked")
  assert result.text.split("stdout:\n")[1].startswith("None")


def test_socket_to_localhost_is_blocked():
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert result.error == "blocked: network access is not allowed"
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
      listener.accept()


def test_dns_lookup_is_blocked():
  result = run("import socket\nprint(socket.gethostbyname('example.com'))")
  assert result.error == "blocked: network access is not allowed"


def test_ctypes_is_blocked():
  result = run("import ctypes\nctypes.CDLL('libc.so.6').system(b'true')")
  assert result.error == "blocked: ctypes is not allowed"


def test_long_output_is_truncated_keeping_both_ends():
  result = run("print('START' + 'x' * 100_000 + 'END')", max_output_chars=1000)
  assert "output truncated" in result.text
  assert "START" in result.text and "END" in result.text
  assert len(result.text) < 1400


def test_stderr_keeps_its_tail_so_the_exception_survives():
  result = run("import sys\nsys.stderr.write('noise\\n' * 10_000)\nraise ValueError('boom')",
               max_output_chars=500)
  assert result.error == "exit code 1: ValueError: boom"
  assert len(result.text) < 1000


def test_syntax_error_is_a_clean_error():
  result = run("print(")
  assert result.error.startswith("exit code 1: SyntaxError")
  assert "<code>" in result.text and "Traceback" not in result.text


def test_exit_code_is_reported():
  result = run("import sys\nprint('bye')\nsys.exit(3)")
  assert result.error == "exit code 3" and result.usage["exit_code"] == 3
  assert "bye" in result.text


def test_files_in_the_working_directory_work_and_vanish_afterwards():
  code = """
import collections, json, math, os, shutil, tempfile
with open('data.json', 'w') as f:
  json.dump({'pi': round(math.pi, 3)}, f)
os.makedirs('sub/dir')
open('sub/dir/x.txt', 'w').close()
shutil.rmtree('sub')
with tempfile.NamedTemporaryFile(dir='.') as f:
  f.write(b'scratch')
print(json.load(open('data.json'))['pi'], sorted(os.listdir('.')), collections.Counter('aab')['a'])
print(os.getcwd())
"""
  result = run(code)
  assert result.error is None, result.text
  lines = result.text.split("stdout:\n")[1].splitlines()
  assert lines[0] == "3.142 ['data.json'] 2"
  assert not os.path.exists(lines[1])
  assert "data.json" not in run("import os\nprint(os.listdir('.'))").text


def sandboxes():
  """Sandbox processes (children of this process, in an orchestra_code_ folder) now alive."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    except OSError:
      continue
    if int(ppid) == os.getpid() and state != "Z" and b"orchestra_code_" in cmdline:
      found.append(int(pid))
  return found


def test_calls_run_concurrently(tmp_path):
  """Eight calls have eight sandboxes alive at once; calls run one by one would show one.

  Each sandbox waits for a file the test creates once it has seen all eight (or after
  30 s, to fail rather than hang).
  """
  go = tmp_path / "go"
  code = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
          "print('released')")
  tool = CodeInterpreter(timeout_s=120)

  async def main():
    calls = asyncio.gather(*[tool({"code": code}) for _ in range(8)])
    loop, peak = asyncio.get_running_loop(), 0
    deadline = loop.time() + 30
    while peak < 8 and loop.time() < deadline:
      peak = max(peak, len(sandboxes()))
      await asyncio.sleep(0.02)
    go.touch()
    return peak, await calls

  peak, results = asyncio.run(main())
  assert peak == 8
  assert all(r.error is None and stdout(r) == "released\n" for r in results)


LAYERS = ["both", "hook", "kernel"]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("escape", ["file", "folder"])
def test_symlinks_do_not_let_writes_escape(tmp_path, monkeypatch, layer, escape):
  """A link in the working folder to an outside file or folder: writing through it fails."""
  only(layer, monkeypatch)
  victim = tmp_path / "victim.txt"
  victim.write_text("precious")
  if escape == "file":
    code = f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('pwned')"
  else:
    code = (f"import os\nos.symlink({str(tmp_path)!r}, 'link')\n"
            "open('link/planted.txt', 'w').write('pwned')")
  result = run(code)
  assert result.error and result.usage["exit_code"] == 1
  if layer == "hook":
    assert result.error.startswith("blocked: writing outside the working directory")
  assert victim.read_text() == "precious" and not (tmp_path / "planted.txt").exists()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("escape", ["out", "in", "through_link"])
def test_renames_do_not_move_files_across_the_working_folder(tmp_path, monkeypatch, layer,
                                                             escape):
  """Renaming out of the folder, taking an outside file in, or out via a linked folder: refused."""
  only(layer, monkeypatch)
  victim = tmp_path / "victim.txt"
  victim.write_text("precious")
  code = {"out": f"open('f', 'w').write('x')\nos.rename('f', {str(tmp_path / 'moved.txt')!r})",
          "in": f"os.rename({str(victim)!r}, 'stolen.txt')",
          "through_link": (f"open('f', 'w').write('x')\nos.symlink({str(tmp_path)!r}, 'link')\n"
                           "os.replace('f', 'link/moved.txt')")}[escape]
  result = run("import os\n" + code)
  assert result.error and result.usage["exit_code"] == 1
  if layer == "hook":
    assert result.error.startswith("blocked: changing files outside")
  assert victim.read_text() == "precious" and not (tmp_path / "moved.txt").exists()


@pytest.fixture
def parent_secret():
  """(fd, text): an anonymous file (memfd) this process holds open, with a secret in it."""
  secret = f"orchestra-secret-{uuid.uuid4().hex}"
  fd = os.memfd_create("secret")
  os.write(fd, secret.encode())
  yield fd, secret
  os.close(fd)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("route", ["fd", "fd_via_symlink", "fd_via_dotdot", "environ_via_symlink"])
def test_another_process_secrets_cannot_be_read_via_proc_links(parent_secret, monkeypatch,
                                                               layer, route):
  """/proc/<parent>/fd/N leads to files only the parent has open; environ to its API keys.

  `realpath` sees straight through such magic links, so the hook must check every hop.
  """
  only(layer, monkeypatch, guards="proc")
  fd, secret = parent_secret
  target = {"fd": f"f'/proc/{{os.getppid()}}/fd/{fd}'",
            "fd_via_symlink": f"os.symlink(f'/proc/{{os.getppid()}}/fd/{fd}', 'link') or 'link'",
            "fd_via_dotdot": f"f'/proc/self/../{{os.getppid()}}/fd/{fd}'",
            "environ_via_symlink": "os.symlink(f'/proc/{os.getppid()}/environ', 'link') or 'link'"}
  result = run(f"import os\nprint(open({target[route]}, 'rb').read())")
  assert secret not in result.text and stdout(result) == "(empty)"
  assert result.error and result.usage["exit_code"] == 1
  if layer == "hook":
    assert result.error == "blocked: reading other processes' /proc entries is not allowed"
  else:
    assert result.error.startswith(("blocked", "exit code 1: PermissionError"))


@pytest.mark.parametrize("where", ["path", "abstract"])
def test_unix_socket_connect_is_refused(tmp_path, where):
  """A Unix socket (e.g. Docker's) crosses network namespaces: the kernel refuses `socket`
  (the seccomp filter; only `socketpair` streams are allowed), the hook `connect`."""
  address = str(tmp_path / "s.sock") if where == "path" else f"\0orchestra-{uuid.uuid4().hex}"
  with socket.socket(socket.AF_UNIX) as listener:
    listener.bind(address)
    listener.listen(1)
    result = run(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({address!r})\n"
                 "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')")
    assert (result.error == "blocked: network access is not allowed"
            or result.error.endswith("PermissionError: [Errno 1] Operation not permitted")
            ), result.text
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
      listener.accept()


@pytest.fixture
def bystander():
  """A process outside the sandbox (a rollout server, say) with the child's kernel uid, so
  that only the sandbox's layers stop it signalling it: the trainer's, or nobody's where a
  root-started child drops to nobody (`drop_root`'s conditions)."""
  child = child_program()
  drops = (os.geteuid() == 0 and child.others_can_enter(os.path.dirname(os.__file__))
           and child.others_can_enter(code_interpreter.sandbox_root()))
  proc = subprocess.Popen(["sleep", "60"], user=NOBODY if drops else None)
  yield proc.pid
  proc.kill()
  proc.wait()


def test_unaudited_calls_are_refused(bystander):
  """CPython raises no audit event for these: `pidfd_send_signal` signals any process of the
  same kernel uid (it killed the trainer's other processes), `memfd_create` pages escape
  RLIMIT_AS, and `_posixsubprocess` loaded under another name gave `fork_exec` back."""
  kill = (f"import os, signal\n"
          f"signal.pidfd_send_signal(os.pidfd_open({bystander}), signal.SIGKILL)")
  assert run(kill).error == "blocked: os.pidfd_open is not allowed"
  assert run("import _signal, signal\n_signal.pidfd_send_signal(3, signal.SIGKILL)").error \
      == "blocked: signalling other processes is not allowed"
  os.kill(bystander, 0)                                             # still alive
  assert run("import os\nos.memfd_create('m')").error == "blocked: os.memfd_create is not allowed"
  alias = ("import importlib.util\n"
           "s = importlib.util.find_spec('_posixsubprocess')\n"
           "spec = importlib.util.spec_from_file_location('x._posixsubprocess', s.origin)\n"
           "importlib.util.module_from_spec(spec)")
  assert run(alias).error == "blocked: creating processes is not allowed"


def test_swapping_the_code_the_hook_runs_is_refused():
  """The hook's own frame shows in a refused call's traceback; rewriting its checker's
  `__code__` switched the whole hook off. Its checks' path functions are guarded too."""
  reach_the_checker = (
      "try:\n  open('/etc/orchestra-test', 'w')\nexcept PermissionError as e:\n"
      "  tb = e.__traceback__\nwhile tb.tb_next:\n  tb = tb.tb_next\n"
      "checker = tb.tb_frame.f_locals['why_blocked']\n"
      "checker.__code__ = (lambda event, args: None).__code__")
  assert run(reach_the_checker).error == "blocked: replacing a function's code is not allowed"
  path_function = "import os\nos.path.realpath.__code__ = (lambda p, strict=False: p).__code__"
  assert run(path_function).error == "blocked: replacing a function's code is not allowed"


def test_other_code_swaps_work_so_asyncio_imports():
  """`types.coroutine`, run when asyncio is imported, sets a function's `__code__`."""
  code = ("import asyncio\nasync def answer():\n  return 42\nprint(asyncio.run(answer()))\n"
          "def f():\n  return 1\nf.__code__ = (lambda: 2).__code__\nprint(f())")
  result = run(code)
  assert result.error is None and stdout(result) == "42\n2\n", result.text


def test_a_root_started_child_runs_as_nobody(tmp_path):
  """As root, with a Python whose standard library others can read, the child gives up
  uid 0: root-only files become unreadable (a user namespace alone keeps them readable)."""
  python = "/usr/bin/python3.11"
  if os.geteuid() != 0 or not os.path.exists(python):
    pytest.skip("needs root and a system Python (this one's library must be readable by all)")
  with tempfile.TemporaryDirectory(dir="/tmp") as folder:
    os.chmod(folder, 0o755)
    secret = os.path.join(folder, "secret")
    with open(secret, "w") as f:
      f.write("root only")
    os.chmod(secret, 0o600)
    result = run(f"print(open({secret!r}).read())", python=python)
  assert result.error and "Permission denied" in result.error, result.text
  assert run("print(6 * 7)", python=python).text.endswith("42\n")


def test_a_deeply_nested_working_directory_is_removed_and_the_output_kept():
  code = ("import os\nprint(os.getcwd())\n"
          "for _ in range(1500):\n  os.mkdir('a')\n  os.chdir('a')\nprint('deep')")
  result = run(code)
  assert result.error is None and result.text.endswith("deep\n"), result.text
  workdir = result.text.split("stdout:\n")[1].splitlines()[0]
  assert workdir.startswith(tempfile.gettempdir()) and not os.path.exists(workdir)


def x86_64_only():
  if os.uname().machine != "x86_64":
    pytest.skip("the seccomp filter's table is x86_64's; elsewhere the layer is skipped")


@functools.cache
def child_program():
  """sandbox_child.py as a module (its functions and tables; `main` is not run)."""
  spec = importlib.util.spec_from_file_location("sandbox_child", code_interpreter.CHILD_PROGRAM)
  child = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(child)
  return child


def test_the_syscall_filters_numbers_are_the_kernels():
  """Every syscall number the filter names, against the kernel's own header."""
  header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
  if not os.path.exists(header):
    pytest.skip(f"no {header} to check against")
  with open(header) as f:
    kernel = {name: int(nr) for name, nr in re.findall(r"#define __NR_(\w+) (\d+)", f.read())}
  child = child_program()
  named = {**child.SYSCALLS, **child.REFUSED_SYSCALLS}
  known = {name: nr for name, nr in named.items() if name in kernel}
  assert {name: kernel[name] for name in known} == known
  newer = {name: nr for name, nr in named.items() if name not in kernel}   # than the header
  assert all(nr > max(kernel.values()) for nr in newer.values()), newer


def run_bpf(program, nr, args=(), arch=0xC000003E):
  """What classic BPF `program` returns for one syscall: an interpreter of the five
  instructions the filter uses, over the kernel's `struct seccomp_data` layout."""
  data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
  pc, accumulator = 0, 0
  while True:
    code, jt, jf, k = program[pc]
    if code == 0x20:                                     # ld [k] (32 bits)
      accumulator, pc = struct.unpack_from("<I", data, k)[0], pc + 1
    elif code == 0x06:                                   # ret k
      return k
    elif code == 0x05:                                   # ja k
      pc += 1 + k
    else:                                                # jeq / jge / jset k, jt, jf
      holds = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
      pc += 1 + (jt if holds else jf)


OWN, OTHER = 4242, 1
ALLOW, EPERM, ENOSYS, KILL = 0x7FFF0000, 0x50001, 0x50026, 0x80000000
FILTER_CASES = [          # (syscall, arguments, decision)
    ("read", (0,), ALLOW), ("fork", (), EPERM), ("execve", (), EPERM), ("clone3", (), ENOSYS),
    ("clone", (0x3D0F00,), ALLOW),                       # glibc's pthread_create flags
    ("clone", (17,), EPERM), ("clone", (17 | 0x10000 << 32,), EPERM),   # fork; thread bit high
    ("clone", (0x3D0F00 | 0x40000000,), EPERM),          # a thread in a new namespace
    ("socket", (1,), EPERM), ("socket", (2,), EPERM),
    ("socketpair", (1, 1), ALLOW), ("socketpair", (1, 1 | 0x80000), ALLOW),
    ("socketpair", (1, 2), EPERM), ("socketpair", (2, 1), EPERM),       # datagrams; AF_INET
    ("socketpair", (1 | 1 << 32, 1), ALLOW),
    ("kill", (OWN, 10), ALLOW), ("kill", (OTHER, 9), EPERM), ("kill", (0, 9), EPERM),
    ("tgkill", (OWN, OWN + 1, 10), ALLOW), ("tgkill", (OTHER, OTHER, 9), EPERM),
    ("prlimit64", (0, 7), ALLOW), ("prlimit64", (OWN, 7), ALLOW),
    ("prlimit64", (OTHER, 0), EPERM), ("sched_setaffinity", (OTHER,), EPERM),
    ("sched_setaffinity", (0,), ALLOW), ("sched_setscheduler", (OTHER,), EPERM),
    ("sched_setparam", (OTHER,), EPERM), ("sched_setattr", (OTHER,), EPERM),
    ("setpriority", (0, 0, 5), ALLOW), ("setpriority", (0, OWN, 5), ALLOW),
    ("setpriority", (0, OTHER, 5), EPERM), ("setpriority", (2, 0, 5), EPERM),   # PRIO_USER
    ("fcntl", (3, 8, OTHER), EPERM), ("fcntl", (3, 10, 9), EPERM), ("fcntl", (3, 15, 0), EPERM),
    ("fcntl", (3, 3), ALLOW), ("fcntl", (3, 4, 0o4000), ALLOW),     # F_GETFL, F_SETFL
    ("fcntl", (3, 1024, 1), EPERM), ("fcntl", (3, 6, 0), ALLOW),     # F_SETLEASE, F_SETLK
    ("ioctl", (3, 0x5412, 0), EPERM), ("ioctl", (3, 0x4C00, 4), EPERM),   # TIOCSTI, loop
    ("shmget", (0, 4096, 0o1600), EPERM), ("mq_open", (0, 0o100), EPERM),
    ("io_setup", (1, 0), EPERM),                          # machine-wide AIO contexts
    ("ioctl", (3, 0x8901, 0), EPERM), ("ioctl", (3, 0x8902, 0), EPERM),
    ("ioctl", (3, 0x5401, 0), ALLOW),                                 # TCGETS
]


@pytest.mark.parametrize("name, args, decision", FILTER_CASES)
def test_the_syscall_filter_decides_as_documented(name, args, decision):
  child = child_program()
  numbers = {**child.SYSCALLS, **child.REFUSED_SYSCALLS, "read": 0}
  program = child.syscall_filter(OWN)
  assert run_bpf(program, numbers[name], args) == decision
  assert run_bpf(program, numbers[name] | 0x40000000, args) == EPERM            # x32 ABI
  assert run_bpf(program, numbers[name], args, arch=0x40000003) == KILL          # i386


def seccomp_filters(status_text):
  return int(status_text.split("Seccomp_filters:")[1].split()[0])


def test_the_syscall_filter_is_on_and_threads_and_own_signals_still_work():
  """One filter more than this process has (a container may have its own)."""
  x86_64_only()
  with open("/proc/self/status") as f:
    expected = seccomp_filters(f.read()) + 1
  code = ("import os, signal, threading\n"
          "print(open('/proc/self/status').read().split('Seccomp_filters:')[1].split()[0])\n"
          "out = []\nt = threading.Thread(target=lambda: out.append(7))\nt.start(); t.join()\n"
          "signal.signal(signal.SIGUSR1, lambda *a: out.append('usr1'))\n"
          "signal.raise_signal(signal.SIGUSR1)\nos.kill(os.getpid(), signal.SIGUSR1)\nprint(out)")
  result = run(code)
  assert result.error is None, result.text
  assert stdout(result) == f"{expected}\n[7, 'usr1', 'usr1']\n", result.text


KERNEL_REFUSED = {
    "fork": "import os\nprint(os.fork())",
    "exec": "import os\nos.execv('/bin/true', ['true'])",
    "subprocess": "import subprocess\nprint(subprocess.run(['true']).returncode)",
    "socket": "import socket\nprint(socket.socket(socket.AF_INET, socket.SOCK_STREAM))",
    "memfd": "import os\nprint(os.memfd_create('m'))",
    "pidfd": "import os\nprint(os.pidfd_open(1))",
    "kill_other": "import os\nos.kill({bystander}, 0)\nprint('signalled')",
    "signal_owner": ("import fcntl, socket\na, b = socket.socketpair()\n"
                     "print(fcntl.fcntl(a.fileno(), fcntl.F_SETOWN, {bystander}))"),
    "ioctl_owner": ("import fcntl, socket, struct\na, b = socket.socketpair()\n"
                    "print(fcntl.ioctl(a.fileno(), 0x8901, struct.pack('i', {bystander})))"),
    "prlimit_other": ("import resource\n"
                      "print(resource.prlimit({bystander}, resource.RLIMIT_CORE, (0, 0)))"),
    "renice_other": "import os\nos.setpriority(os.PRIO_PROCESS, {bystander}, 1)\nprint('ok')",
    "affinity_other": ("import os\nos.sched_setaffinity({bystander}, os.sched_getaffinity(0))\n"
                       "print('ok')"),
}


@pytest.mark.parametrize("call", sorted(KERNEL_REFUSED))
@pytest.mark.parametrize("filtered", [True, False])
def test_the_syscall_filter_alone_refuses_what_the_hook_refuses(monkeypatch, bystander, call,
                                                                filtered):
  """With the audit hook and the unaudited-call guard left out (as deliberate code that got
  past them would have it), the kernel still refuses; without the filter too, the same code
  succeeds (the control: these calls are possible here)."""
  x86_64_only()
  without(monkeypatch, HOOK_LAYER, FORK_GUARD, *([] if filtered else [SYSCALL_FILTER]))
  result = run(KERNEL_REFUSED[call].format(bystander=bystander))
  if filtered:
    assert result.error and "Operation not permitted" in result.text, result.text
  else:
    assert result.error is None and stdout(result).strip(), result.text


@pytest.mark.parametrize("call, reason", [
    ("signal_owner", "signalling other processes"), ("ioctl_owner", "signalling other processes"),
    ("prlimit_other", "changing other processes"), ("renice_other", "changing other processes"),
    ("affinity_other", "changing other processes"),
])
def test_the_hook_refuses_signal_owners_and_changes_to_other_processes(bystander, call, reason):
  """A review's finding: an fd's signal owner (F_SETOWN, FIOSETOWN) lets the kernel send
  SIGIO, or any F_SETSIG signal, to any process of the uid, and prlimit killed a busy root
  process (RLIMIT_CPU 0); priorities and affinities changed too. The full sandbox."""
  result = run(KERNEL_REFUSED[call].format(bystander=bystander))
  assert result.error == f"blocked: {reason} is not allowed", result.text
  assert alive(bystander)


def test_the_same_calls_on_the_sandbox_itself_still_work():
  code = ("import fcntl, os, resource, socket\na, b = socket.socketpair()\n"
          "fcntl.fcntl(a.fileno(), fcntl.F_SETFL, os.O_NONBLOCK)\n"
          "print(resource.prlimit(0, resource.RLIMIT_CORE)[0])\n"
          "os.setpriority(os.PRIO_PROCESS, 0, 1)\nprint(os.getpriority(os.PRIO_PROCESS, 0))\n"
          "os.sched_setaffinity(os.getpid(), os.sched_getaffinity(0))\nos.nice(1)\nprint('ok')")
  result = run(code)
  assert result.error is None and stdout(result) == "0\n1\nok\n", result.text


def test_thread_pools_get_a_private_dev_shm(tmp_path):
  """multiprocessing's locks need POSIX semaphores in /dev/shm, read-only under the mounts:
  the child gets a small tmpfs of its own there, which hides the host's."""
  if not kernel_layer()[0] or not os.path.isdir("/dev/shm"):
    pytest.skip("no mount namespace on this machine: /dev/shm is the host's")
  marker = f"/dev/shm/orchestra-test-{uuid.uuid4().hex}"
  with open(marker, "w"):
    pass
  try:
    code = ("import os\nfrom multiprocessing.pool import ThreadPool\n"
            "with ThreadPool(3) as pool:\n  print(pool.map(abs, [-1, -2, -3]))\n"
            f"print(os.path.exists({marker!r}))")
    result = run(code)
  finally:
    os.remove(marker)
  assert result.error is None and stdout(result) == "[1, 2, 3]\nFalse\n", result.text


def test_dev_holds_only_harmless_devices():
  """A device node opens for writing under a read-only mount: the host's /dev gave the
  kernel log, loop devices and terminals (TIOCSTI) to a child with kernel uid 0."""
  if not kernel_layer()[0]:
    pytest.skip("no mount namespace on this machine: /dev is the host's")
  code = ("import os\nprint(sorted(os.listdir('/dev')))\nopen('/dev/null', 'w').write('x')\n"
          "print(len(open('/dev/urandom', 'rb').read(4)), os.path.exists('/dev/kmsg'))")
  result = run(code)
  assert result.error is None, result.text
  assert stdout(result) == ("['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', "
                            "'stdout', 'urandom', 'zero']\n4 False\n")


def test_sysv_shared_memory_stays_in_the_sandboxs_ipc_namespace(monkeypatch):
  """With the hook and the syscall filter left out, a segment the code creates lives in an
  IPC namespace of its own: the host never lists it, and it goes with the sandbox (on the
  host's, it would outlive the run, outside every memory limit)."""
  if not kernel_layer()[0] and not kernel_layer()[1]:
    pytest.skip("no namespaces on this machine")
  without(monkeypatch, HOOK_LAYER, FORK_GUARD, SYSCALL_FILTER)
  key = int(uuid.uuid4().hex[:7], 16)
  code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
          f"print(libc.shmget({key}, 4096, 0o1600) >= 0)\n"
          "print(open('/proc/sysvipc/shm').read().count(' %d ' % " + str(key) + "))")
  result = run(code)
  assert result.error is None and stdout(result) == "True\n1\n", result.text
  with open("/proc/sysvipc/shm") as f:
    assert f" {key} " not in f.read()



def landlock_abi():
  import ctypes
  return ctypes.CDLL(None, use_errno=True).syscall(444, None, ctypes.c_long(0), ctypes.c_long(1))


@pytest.mark.parametrize("landlocked", [True, False])
def test_landlock_alone_keeps_writes_in_the_working_directory(tmp_path, monkeypatch,
                                                              landlocked):
  """With the hook and the namespaces left out, the kernel still refuses a write outside
  the working directory; without Landlock too, the write lands (the control)."""
  if landlock_abi() < 1:
    pytest.skip("no Landlock on this kernel")
  os.chmod(tmp_path, 0o777)
  without(monkeypatch, HOOK_LAYER, KERNEL_LAYER, *([] if landlocked else [LANDLOCK]))
  target = tmp_path / "escaped.txt"
  result = run(f"open({str(target)!r}, 'w').write('x')\nprint('written')")
  if landlocked:
    assert "Permission denied" in result.text and not target.exists(), result.text
  else:
    assert result.error is None and target.read_text() == "x", result.text


@pytest.mark.parametrize("landlocked", [True, False])
def test_a_fifo_outside_is_not_writable_even_through_dir_fd(monkeypatch, landlocked):
  """A FIFO (or device node) opens for writing under a read-only mount, and `dir_fd` hides
  the path from the hook's write check: Landlock refuses it. The full sandbox otherwise
  (the FIFO open to all, in a folder all may enter: a child dropped to nobody reaches it)."""
  if landlock_abi() < 1:
    pytest.skip("no Landlock on this kernel")
  if not landlocked:
    without(monkeypatch, LANDLOCK)
  tmp_path = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))
  os.chmod(tmp_path, 0o755)
  fifo = tmp_path / "fifo"
  os.mkfifo(fifo)
  os.chmod(fifo, 0o666)
  reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
  try:
    code = (f"import os\nfolder = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
            "os.write(os.open('fifo', os.O_WRONLY | os.O_NONBLOCK, dir_fd=folder), b'hi')\n"
            "print('written')")
    result = run(code)
    received = os.read(reader, 10) if not landlocked else b""
  finally:
    os.close(reader)
    shutil.rmtree(tmp_path)
  if landlocked:
    assert "Permission denied" in result.text, result.text
  else:
    assert result.error is None and received == b"hi", result.text


def test_queued_signals_are_capped_per_sandbox():
  """Pending signals count per user: uid 0's queue is every root process's (a review
  filled it, and root's sigqueue/timer_create failed). kill() never fails for lack of
  queue room; the count stops at the limit (without it, 1000 here)."""
  code = ("import os, signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})\n"
          "for _ in range(1000):\n  os.kill(os.getpid(), signal.SIGRTMIN)\n"
          "print(open('/proc/self/status').read().split('SigQ:')[1].split()[0])")
  result = run(code)
  assert result.error is None, result.text
  queued, limit = map(int, stdout(result).split("/"))
  assert limit == 64 and queued <= 64, result.text


def test_the_working_directory_is_alone_in_its_folder():
  """Concurrent calls' working directories sit side by side (`sandbox_root`): one read
  another's files and held a lock on its sqlite database. Each child sees only its own
  (and devices, setuid and exec are off in it)."""
  if not kernel_layer()[0]:
    pytest.skip("no mount namespace on this machine: the working folder's neighbours show")
  neighbour = os.path.join(code_interpreter.sandbox_root(), f"orchestra-test-{uuid.uuid4().hex}")
  with open(neighbour, "w") as f:
    f.write("another call's file")
  try:
    code = ("import os\nhere = os.getcwd()\n"
            "print(os.listdir(os.path.dirname(here)) == [os.path.basename(here)])\n"
            f"print(os.path.exists({neighbour!r}))\n"
            "flags = os.statvfs('.').f_flag\n"
            "print(bool(flags & os.ST_NOEXEC), bool(flags & os.ST_NODEV))")
    result = run(code)
  finally:
    os.remove(neighbour)
  assert result.error is None and stdout(result) == "True\nFalse\nTrue True\n", result.text


def test_sandbox_root_is_private_and_a_loose_one_is_not_used(tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
  root = code_interpreter.sandbox_root()
  assert root == str(tmp_path / f"orchestra_sandboxes_{os.getuid()}")
  assert os.stat(root).st_mode & 0o777 == 0o711
  os.chmod(root, 0o777)                         # others could plant or swap working folders
  assert code_interpreter.sandbox_root() == str(tmp_path)


def test_the_sandbox_works_inside_a_user_namespace(tmp_path):
  """As in a rootless container: the namespaces' root may mount, but a device node made
  there would not open; /dev's devices are bound from the host's."""
  unshare = shutil.which("unshare")
  if unshare is None or subprocess.run([unshare, "--user", "--map-root-user", "true"]).returncode:
    pytest.skip("no unshare(1), or user namespaces are off")
  wrapper = tmp_path / "python_in_a_user_namespace"
  wrapper.write_text(f'#!/bin/sh\nexec {unshare} --user --map-root-user {sys.executable} "$@"\n')
  wrapper.chmod(0o755)
  code = ("import os\nopen('/dev/null', 'w').write('x')\nprint(len(os.urandom(3)), "
          "os.path.exists('/dev/kmsg'))\nopen('f', 'w').write('kept')\nprint(open('f').read())")
  result = run(code, python=str(wrapper))
  assert result.error is None and stdout(result) == "3 False\nkept\n", result.text


@pytest.mark.parametrize("layer", LAYERS)
def test_the_hosts_devices_keep_their_mode_and_times(monkeypatch, layer):
  """The child (kernel uid 0 here) owns the host's /dev/null: a review made it mode 1666
  and dated 1970, for good. The devices are bound read-only and the hook refuses it. (The
  attempt sets the mode /dev/null already has, so nothing changes even if it succeeded.)"""
  only(layer, monkeypatch)
  mode = stat.S_IMODE(os.stat("/dev/null").st_mode)
  result = run(f"import os\nos.chmod('/dev/null', {mode:#o})\nprint('changed')")
  assert result.error and "changed" not in stdout(result), result.text


def test_the_working_directory_is_a_tmpfs_of_its_own():
  """Files the code writes never reach the host's disk: no setuid file for the host's users
  (a review left a root-owned setuid copy of /bin/true there), no disk to fill."""
  if not kernel_layer()[0]:
    pytest.skip("no mount namespace on this machine: the working directory is on the host's disk")
  code = ("import os\nhere = os.getcwd()\n"
          "mounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
          "fields = next(f for f in mounts if f[4] == here)\n"
          "print(fields[fields.index('-') + 1], 'nosuid' in fields[5])")
  result = run(code)
  assert result.error is None and stdout(result) == "tmpfs True\n", result.text


THREADS = ("import threading, _thread\nthreading.stack_size(32768)\n"
           "lock = threading.Lock()\nlock.acquire()\nstarted = 0\ntry:\n"
           "  for _ in range(300):\n    _thread.start_new_thread(lock.acquire, ())\n"
           "    started += 1\nexcept RuntimeError:\n  pass\nprint(started)")


@pytest.mark.parametrize("capped", [True, False])
def test_a_calls_threads_are_capped_by_its_pids_cgroup(monkeypatch, capped):
  """A child that keeps kernel uid 0 is exempt from RLIMIT_NPROC: a review started ~23,000
  threads in one run. Its own pids cgroup caps the call at 64 tasks; without it (the
  control), 300 small-stack threads start."""
  if not os.access(code_interpreter.PIDS_CGROUP_ROOT, os.W_OK):
    pytest.skip("no writable cgroup-v1 pids hierarchy here")
  if not capped:
    monkeypatch.setattr(code_interpreter, "PIDS_CGROUP_ROOT", "/nonexistent")
  result = run(THREADS)
  assert result.error is None, result.text
  started = int(stdout(result))
  assert started < code_interpreter.MAX_TASKS_PER_CALL if capped else started == 300


def test_a_calls_pids_cgroup_is_removed_after_it(monkeypatch):
  if not os.access(code_interpreter.PIDS_CGROUP_ROOT, os.W_OK):
    pytest.skip("no writable cgroup-v1 pids hierarchy here")
  made = []
  make = code_interpreter._pids_cgroup
  monkeypatch.setattr(code_interpreter, "_pids_cgroup", lambda: made.append(make()) or made[-1])
  result = run("import os\nprint(open('/proc/self/cgroup').read().count('orchestra_code_'))")
  assert result.error is None and stdout(result) == "1\n", result.text
  assert made and made[0] and not os.path.exists(made[0])


def test_the_pids_cgroup_goes_inside_the_callers_own(tmp_path):
  """Made at the hierarchy's root, a call's group would leave an outer cap (a systemd
  service's TasksMax) behind."""
  proc = tmp_path / "cgroup"
  proc.write_text("9:name=systemd:/\n8:pids:/system.slice/trainer.service\n4:memory:/x\n")
  assert code_interpreter._own_pids_cgroup(str(proc)) == os.path.join(
      code_interpreter.PIDS_CGROUP_ROOT, "system.slice/trainer.service")
  proc.write_text("0::/user.slice\n")
  assert code_interpreter._own_pids_cgroup(str(proc)) is None


def test_the_child_is_not_dumpable(monkeypatch):
  """A piped core_pattern ignores RLIMIT_CORE 0 and would hand a crashed child's memory to
  a root helper. (Asked through ctypes, so with the hook left out.)"""
  without(monkeypatch, HOOK_LAYER, FORK_GUARD)
  result = run("import ctypes\nprint(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")   # GET_DUMPABLE
  assert result.error is None and stdout(result) == "0\n", result.text
