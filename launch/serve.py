"""Serve a local Hugging Face-format checkpoint over an OpenAI-compatible API (JAX engine).

  python launch/serve.py --model_dir=/tmp/hf --port=8000 [--served_model_name=policy]

The routes match vLLM's (token-id completions with logprobs, chat with tool
calls, pause/resume/reload_weights), so the trainer and evaluators talk to it
exactly as they talk to a vLLM server.
"""

import os

from absl import app, flags, logging

flags.DEFINE_string("model_dir", None, "HF folder (config.json, safetensors, tokenizer)",
                    required=True)
flags.DEFINE_integer("port", 8000, "TCP port")
flags.DEFINE_string("host", "127.0.0.1", "interface to bind (0.0.0.0 to expose the server)")
flags.DEFINE_string("served_model_name", None, "model name reported (default: the folder name)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter and compute dtype")
flags.DEFINE_integer("max_batch_size", 64, "most requests decoded together")
flags.DEFINE_integer("max_model_len", 32_768, "prompt + generated tokens per request")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import uvicorn
  from transformers import AutoTokenizer

  from orchestra.agent.chat_format import CHAT_TEMPLATE
  from orchestra.checkpoint import CheckpointError
  from orchestra.engines.jax_engine import JaxEngine
  from orchestra.engines.server import create_app
  from orchestra.models import ConfigError, load_hf

  try:
    model = load_hf(FLAGS.model_dir, dtype=FLAGS.dtype)
    tokenizer = AutoTokenizer.from_pretrained(FLAGS.model_dir, local_files_only=True)
  except (ConfigError, CheckpointError, OSError) as e:
    raise app.UsageError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  if not tokenizer.chat_template:
    logging.info("tokenizer has no chat_template; using Orchestra's Qwen3-style template")
    tokenizer.chat_template = CHAT_TEMPLATE
  name = FLAGS.served_model_name or os.path.basename(os.path.normpath(FLAGS.model_dir))
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  engine = JaxEngine(model, max_batch_size=FLAGS.max_batch_size, pad_id=pad)
  print(f"serving {name} on http://{FLAGS.host}:{FLAGS.port}", flush=True)
  uvicorn.run(create_app(engine, tokenizer, name, FLAGS.max_model_len), host=FLAGS.host,
              port=FLAGS.port, log_level="warning")


if __name__ == "__main__":
  app.run(main)
