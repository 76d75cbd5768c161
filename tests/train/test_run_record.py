"""The run folder's config record, and launch errors that must name the field or path."""

import json
import os
import subprocess
import sys

import pytest
from ml_collections import ConfigDict

from orchestra.train.run_record import OVERRIDES_FILE, RunRecordError, record_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def config(**rl):
  return ConfigDict({"seed": 0, "model": {"num_layers": 4, "remat": "none"},
                     "env": {"seed": 0}, "tools": {"names": ("a", "b")},
                     "rl": {"total_steps": 10, "learning_rate": 1e-3, **rl}})


def test_new_run_is_recorded_and_a_resume_logs_its_overrides(tmp_path):
  assert record_config(config(), str(tmp_path)) == {}
  recorded = (tmp_path / "config.json").read_text()
  assert record_config(config(), str(tmp_path)) == {}                  # same config: nothing
  assert not (tmp_path / OVERRIDES_FILE).exists()
  changes = record_config(config(total_steps=20), str(tmp_path))
  assert changes == {"rl.total_steps": (10, 20)}
  assert (tmp_path / "config.json").read_text() == recorded           # never rewritten
  logged = [json.loads(line) for line in (tmp_path / OVERRIDES_FILE).read_text().splitlines()]
  assert logged[-1]["changes"] == {"rl.total_steps": [10, 20]}


@pytest.mark.parametrize("dtype, refused", [("float32", False), ("bfloat16", True)])
def test_a_folder_recorded_before_the_model_fields_existed_resumes_with_their_old_values(
    tmp_path, dtype, refused):
  record_config(config(), str(tmp_path))            # no model.dtype/rope_theta/... recorded
  newer = config()
  newer.model.update(dtype=dtype, rope_theta=10_000.0, tie_word_embeddings=False, init_from="")
  if refused:
    with pytest.raises(RunRecordError, match="model.dtype"):
      record_config(newer, str(tmp_path))
  else:
    assert record_config(newer, str(tmp_path)) == {}


@pytest.mark.parametrize("change, field", [
    (lambda c: c.model.update(num_layers=2), "model.num_layers"),
    (lambda c: c.env.update(seed=1), "env.seed"),
    (lambda c: c.tools.update(names=("a",)), "tools.names"),
])
def test_resume_refuses_a_different_model_or_data(tmp_path, change, field):
  record_config(config(), str(tmp_path))
  other = config()
  change(other)
  with pytest.raises(RunRecordError, match=field):
    record_config(other, str(tmp_path))
  remat = config()
  remat.model.remat = "full"                                           # not the shape
  assert record_config(remat, str(tmp_path)) == {"model.remat": ("none", "full")}


def train(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
                        capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.slow
def test_a_rejected_launch_leaves_the_recorded_config_unchanged(tmp_path):
  (tmp_path / "config.json").write_text('{"recorded": true}')
  out = train(f"--config={CONFIG}", f"--workdir={tmp_path}", "--config.rl.group_size=0")
  assert out.returncode != 0 and "config.rl.group_size=0" in out.stderr
  assert (tmp_path / "config.json").read_text() == '{"recorded": true}'


@pytest.mark.slow
def test_a_first_launch_that_fails_its_setup_records_nothing(tmp_path):
  """A mistake the setup catches (here a starting policy folder that does not exist) must
  not become the run folder's record, or the corrected relaunch is refused as 'a different
  model'."""
  out = train(f"--config={CONFIG}", f"--workdir={tmp_path}", "--config.model.init_from=/no/qwen")
  assert out.returncode != 0
  assert "config.model.init_from='/no/qwen': not a Hugging Face model folder" in out.stderr
  assert not (tmp_path / "config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--config=configs/no_such.py"], "--config=configs/no_such.py: no such file"),
    (["--config.rl.totl_steps=3"], "config.rl.totl_steps: no such field; nearest valid: "
                                   "total_steps"),
    (["--config.rl.learning_rate=-0.1"], "config.rl.learning_rate=-0.1 must be > 0"),
    (["--config.rl.algorithm=ppo", "--config.rl.value_learning_rate=-1"],
     "config.rl.value_learning_rate=-1.0 must be > 0"),
    (["--workdir={file}"], "is a file, not a folder"),
])
def test_path_and_field_mistakes_are_one_clear_line(tmp_path, args, message):
  (tmp_path / "file").write_text("")
  args = [a.format(file=tmp_path / "file") for a in args]
  if not any(a.startswith("--config=") for a in args):
    args.insert(0, f"--config={CONFIG}")                 # overrides follow --config
  if not any(a.startswith("--workdir=") for a in args):
    args.append(f"--workdir={tmp_path / 'run'}")
  out = train(*args, "--dry_run")
  assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
