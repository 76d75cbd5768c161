"""generation_eos_ids: the eos ids a rollout server stops at, read from a model folder as
vLLM reads them (generation_config.json, else config.json)."""

import json
import os

import pytest
from flax import nnx

from orchestra.checkpoint import CheckpointError, generation_eos_ids, save_hf
from orchestra.models import CausalLM, DecoderConfig

CFG = DecoderConfig("qwen3", vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1,
                    num_heads=2, num_kv_heads=1, head_dim=8, qk_norm=True,
                    tie_word_embeddings=True, eos_token_id=5)


@pytest.fixture
def folder(tmp_path):
  out = str(tmp_path / "hf")
  save_hf(CausalLM(CFG, rngs=nnx.Rngs(0)), out)
  return out


def write_generation_config(folder, text):
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    f.write(text)


def test_an_export_stops_at_its_configs_eos(folder):
  assert generation_eos_ids(folder) == (5,)


def test_a_generation_config_list_wins_over_config_json(folder):
  write_generation_config(folder, json.dumps({"eos_token_id": [5, 9]}))
  assert generation_eos_ids(folder) == (5, 9)
  write_generation_config(folder, json.dumps({"do_sample": True}))
  assert generation_eos_ids(folder) == ()


def test_without_a_generation_config_config_json_gives_the_ids(folder):
  os.remove(os.path.join(folder, "generation_config.json"))
  assert generation_eos_ids(folder) == (5,)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"eos_token_id": "five"}'])
def test_an_unreadable_generation_config_is_a_checkpoint_error(folder, text):
  write_generation_config(folder, text)
  with pytest.raises(CheckpointError, match="generation_config.json"):
    generation_eos_ids(folder)
