"""`load_tokenizer`: a run's own tokenizer loads as `AutoTokenizer` loads it, without
importing transformers' model registry (and torch); any other class still goes through
`AutoTokenizer`."""

import json
import os
import subprocess
import sys

from tokenizer_fixture import make_tokenizer
from transformers import AutoTokenizer

from orchestra.agent.tokenizer import load_tokenizer

MESSAGES = [{"role": "user", "content": "capital of Veloria? 17 * 3"}]


def test_a_trained_tokenizer_loads_as_auto_tokenizer_does(tmp_path):
  make_tokenizer().save_pretrained(tmp_path)
  ours, auto = load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)
  assert type(ours) is type(auto)
  assert ours.get_vocab() == auto.get_vocab()
  assert ours.all_special_tokens == auto.all_special_tokens
  assert (ours.pad_token_id, ours.eos_token_id) == (auto.pad_token_id, auto.eos_token_id)
  assert (ours.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
          == auto.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False))


def test_a_trained_tokenizer_loads_without_the_model_registry(tmp_path):
  make_tokenizer().save_pretrained(tmp_path)
  probe = ("import sys; from orchestra.agent.tokenizer import load_tokenizer; "
           f"load_tokenizer({str(tmp_path)!r}); "
           "print(sorted(m for m in ('torch', 'transformers.models.auto') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]", out.stdout


def test_another_tokenizer_class_goes_through_auto_tokenizer(tmp_path):
  make_tokenizer().save_pretrained(tmp_path)
  config_path = tmp_path / "tokenizer_config.json"
  config = json.loads(config_path.read_text())
  config["tokenizer_class"] = "Qwen2Tokenizer"
  config_path.write_text(json.dumps(config))
  ours = load_tokenizer(str(tmp_path))
  assert type(ours) is type(AutoTokenizer.from_pretrained(tmp_path))
  assert type(ours).__name__.startswith("Qwen2Tokenizer")
