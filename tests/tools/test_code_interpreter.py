"""code_interpreter: ordinary code works, and every escape attempt becomes an error observation."""

import asyncio
import os
import socket
import time
import uuid

import pytest

from orchestra.tools.base import ToolConfigError, build_tool
from orchestra.tools.code_interpreter import CodeInterpreter


def run(code, **options):
  """Runs `code` through a fresh tool, as a model's tool call would."""
  return asyncio.run(CodeInterpreter(**options)({"code": code}))


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


def test_infinite_loop_times_out():
  start = time.perf_counter()
  result = run("while True: pass", timeout_s=2)
  assert result.error in ("timeout", "cpu time limit exceeded")
  assert time.perf_counter() - start < 6


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


def test_write_check_evasion_is_stopped_by_the_read_only_mounts(tmp_path):
  """`os.open(..., dir_fd=)` slips past the audit hook; the kernel layer must stop it."""
  probe = run("import os\nprint(bool(os.statvfs('/').f_flag & os.ST_RDONLY))")
  if "True" not in probe.text:
    pytest.skip("no mount namespace on this machine: only the audit hook guards writes")
  code = (f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
          f"os.open('escape.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)")
  result = run(code)
  assert "Read-only file system" in (result.error or "")
  assert not (tmp_path / "escape.txt").exists()


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


def test_calls_run_concurrently():
  tool = CodeInterpreter()

  async def eight():
    return await asyncio.gather(*[tool({"code": "import time; time.sleep(0.5)"}) for _ in range(8)])

  start = time.perf_counter()
  results = asyncio.run(eight())
  elapsed = time.perf_counter() - start
  assert all(r.error is None for r in results)
  assert elapsed < 2.5, f"8 x 0.5 s took {elapsed:.2f} s"
