"""export_policy: which exports a sync keeps, including after a resume from an older step."""

import os

from flax import nnx
from tokenizer_fixture import make_tokenizer, tokenizer_dir  # noqa: F401 (a fixture)

from orchestra.engines.weight_sync import DiskSync, export_policy
from orchestra.models import CausalLM, DecoderConfig


def test_a_resume_removes_the_killed_runs_later_exports_and_keeps_its_own(tmp_path,
                                                                         tokenizer_dir):
  """A run killed after exporting steps 6 and 7 resumes from its step-5 checkpoint: the
  step-5 export must survive its own pruning, and no server may load 6 or 7."""
  model = CausalLM(DecoderConfig("qwen3", vocab_size=len(make_tokenizer()), hidden_size=16,
                                 intermediate_size=24, num_layers=1, num_heads=2,
                                 num_kv_heads=1, head_dim=8), rngs=nnx.Rngs(0))
  sync_dir = str(tmp_path / "sync")
  for version in (3, 4, 6, 7):                              # the killed run's exports
    export_policy(model, sync_dir, version, tokenizer_dir, "float32")
  assert sorted(os.listdir(sync_dir)) == ["step_6", "step_7"]
  path = export_policy(model, sync_dir, 5, tokenizer_dir, "float32")
  assert os.path.isdir(path)
  assert sorted(os.listdir(sync_dir)) == ["step_5"]
  export_policy(model, sync_dir, 6, tokenizer_dir, "float32")
  export_policy(model, sync_dir, 7, tokenizer_dir, "float32")
  assert sorted(os.listdir(sync_dir)) == ["step_6", "step_7"]
  assert DiskSync(None, sync_dir, tokenizer_dir, "float32").newest().endswith("step_7")
