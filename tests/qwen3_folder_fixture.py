"""A tiny random Qwen3 folder saved by `transformers`, as `config.model.init_from` reads one.

Its tokenizer is trained by `tokenizers` on the offline default's text, and it carries a
Qwen3-style chat template of its own (it differs from the built-in format: the generation
prompt carries an empty think block, as Qwen3 renders it with thinking off), so tests can
tell the folder's template from ours.
"""

import importlib.util
import os

import pytest

from orchestra.agent.chat_format import CHAT_TEMPLATE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CPU = os.path.join(ROOT, "configs", "tiny_cpu.py")
THINK_OFF = "<think>\n\n</think>\n\n"
# The built-in template, with Qwen3's thinking-off generation prompt.
TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n" + THINK_OFF.replace(
        "\n", "\\n") + "' }}{%- endif %}")
SHAPE = dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
             head_dim=16)


def tiny_config():
  spec = importlib.util.spec_from_file_location("tiny_cpu", TINY_CPU)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  """(folder, vocabulary size) of the tiny Qwen3."""
  import torch
  from transformers import Qwen3Config, Qwen3ForCausalLM
  assert TEMPLATE != CHAT_TEMPLATE
  from orchestra.train.setup import build_setup
  folder = str(tmp_path_factory.mktemp("qwen3-tiny"))
  tokenizer = build_setup(tiny_config(), str(tmp_path_factory.mktemp("own-run"))).tokenizer
  tokenizer.chat_template = TEMPLATE
  tokenizer.save_pretrained(folder)
  torch.manual_seed(0)
  config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=SHAPE["hidden_size"],
                       intermediate_size=SHAPE["intermediate_size"],
                       num_hidden_layers=SHAPE["num_layers"],
                       num_attention_heads=SHAPE["num_heads"],
                       num_key_value_heads=SHAPE["num_kv_heads"], head_dim=SHAPE["head_dim"],
                       tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                       rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
  Qwen3ForCausalLM(config).save_pretrained(folder)
  return folder, len(tokenizer)
