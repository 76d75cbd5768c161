"""An export replaces only an empty folder or a previous export: nothing else is ever deleted."""

import os
import subprocess
import sys

import pytest
from flax import nnx

from orchestra.checkpoint import CheckpointError, CheckpointManager
from orchestra.checkpoint import load_hf, save_hf
from orchestra.models import CausalLM, DecoderConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=16, intermediate_size=24, num_layers=1,
                    num_heads=2, num_kv_heads=1, head_dim=8, qk_norm=True)


def model(seed=0):
  return CausalLM(CFG, rngs=nnx.Rngs(seed))


def test_a_previous_export_is_replaced(tmp_path):
  out = tmp_path / "hf"
  save_hf(model(0), out)
  save_hf(model(1), out)
  again = load_hf(str(out))
  assert (again.model.embed[...] == model(1).model.embed[...]).all()
  assert sorted(os.listdir(tmp_path)) == ["hf"]             # no temporary folders left


@pytest.mark.parametrize("content", ["notes.txt", "checkpoints/1/x"])
def test_a_folder_with_other_files_is_refused_and_kept(tmp_path, content):
  out = tmp_path / "run"
  (out / content).parent.mkdir(parents=True, exist_ok=True)
  (out / content).write_text("keep me")
  with pytest.raises(CheckpointError, match="not empty and not a previous export"):
    save_hf(model(), out)
  assert (out / content).read_text() == "keep me"
  file = tmp_path / "file"
  file.write_text("x")
  with pytest.raises(CheckpointError, match="is a file"):
    save_hf(model(), file)


@pytest.mark.slow
def test_export_script_into_the_run_folder_deletes_nothing(tmp_path):
  workdir = tmp_path / "run"
  m = model()
  with CheckpointManager(workdir) as manager:
    manager.save(1, {"params": nnx.state(m, nnx.Param)}, {"model_config": CFG.to_dict()})
    manager.wait()
  (workdir / "metrics.jsonl").write_text("{}\n")
  before = sorted(os.listdir(workdir))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  out = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export_hf.py"),
                        f"--workdir={workdir}", f"--out={workdir}"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode != 0 and "refusing to replace it" in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert sorted(os.listdir(workdir)) == before
