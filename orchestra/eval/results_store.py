"""The run folder's files: results.jsonl (one record per finished item) and run.json (the pin).

Resume: every finished item is appended to OUT_DIR/results.jsonl as one line, written with
a single `write` and fsync'ed, so a crash loses at most the items in flight; a torn last
line is dropped on the next start. OUT_DIR/run.json pins the setup (benchmark, data file
hash, orchestrator, tools, grader): resuming into a folder of another setup is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from orchestra.eval.qa_settings import BenchmarkError

RESULTS_FILE, RUN_FILE = "results.jsonl", "run.json"


class ResultsStore:
  """OUT_DIR/results.jsonl: one JSON record per finished item, appended atomically."""

  def __init__(self, out_dir: str):
    self.out_dir = out_dir
    self.path = os.path.join(out_dir, RESULTS_FILE)

  def load(self) -> dict[str, dict[str, Any]]:
    """id -> its last record; a torn (unterminated or unparseable) last line is cut off."""
    records: dict[str, dict[str, Any]] = {}
    if not os.path.exists(self.path):
      return records
    with open(self.path, "rb") as f:
      data = f.read()
    good_end = 0
    for lineno, line in enumerate(data.splitlines(keepends=True), start=1):
      try:
        record = json.loads(line) if line.endswith(b"\n") else None
      except ValueError:
        record = None
      if not isinstance(record, dict) or "id" not in record:
        if good_end + len(line) == len(data):    # the last line: a crash mid-write
          print(f"{self.path}, line {lineno}: dropping an incomplete record", file=sys.stderr)
          with open(self.path, "r+b") as f:
            f.truncate(good_end)
          break
        raise BenchmarkError(f"{self.path}, line {lineno}: not a result record; delete the "
                             "line or use another --out")
      records[str(record["id"])] = record
      good_end += len(line)
    return records

  def append(self, record: dict[str, Any]) -> None:
    """Writes `record` as one line with a single write, then fsyncs."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
      os.fsync(fd)
    finally:
      os.close(fd)

  def rewrite(self, records: Sequence[dict[str, Any]]) -> None:
    """Replaces the file with `records` (atomically: temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=".results-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, self.path)


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


PINNED = ("benchmark", "data_sha256", "orchestrator.kind", "orchestrator.model", "tools", "grader")


def _get(setup: dict[str, Any], dotted: str) -> Any:
  value: Any = setup
  for part in dotted.split("."):
    value = value.get(part) if isinstance(value, dict) else None
  return value


def pin_run(out_dir: str, setup: dict[str, Any], ignore: Sequence[str] = ()) -> None:
  """Writes OUT_DIR/run.json, or checks that the run already there has the same setup.

  Compared: PINNED less `ignore` (the endpoint URL may change between resumes: a restarted
  server on another port serves the same model).
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, RUN_FILE)
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise BenchmarkError(f"{path}: unreadable ({e}); delete it or use another --out") from None
    for key in PINNED:
      if key not in ignore and _get(old, key) != _get(setup, key):
        raise BenchmarkError(f"{out_dir} holds a run with another {key} ({_get(old, key)!r}, "
                             f"now {_get(setup, key)!r}); use another --out to start a new run, "
                             "or the same settings to resume this one")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(setup, f, indent=2)

