"""Serve a local Hugging Face-format checkpoint over an OpenAI-compatible API (JAX engine).

  python launch/serve.py --model_dir=/tmp/hf --port=8000 [--served_model_name=policy]

It binds the port before it prints "serving NAME on http://HOST:PORT"; with --port=0 the
system picks a free port and that line names it (how the tests start it without a race).

The routes match vLLM's (token-id completions with logprobs, chat with tool
calls, pause/resume/reload_weights), so the trainer and evaluators talk to it
exactly as they talk to a vLLM server.
"""

import os
import socket

from absl import app, flags, logging

flags.DEFINE_string("model_dir", None, "HF folder (config.json, safetensors, tokenizer)",
                    required=True)
flags.DEFINE_integer("port", 8000, "TCP port (0: any free port, printed once bound)")
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

  from orchestra.agent.chat_format import CHAT_TEMPLATE, IM_END
  from orchestra.agent.parser import parse_turn
  from orchestra.checkpoint import CheckpointError
  from orchestra.engines.jax_engine import JaxEngine
  from orchestra.engines.server import create_app
  from orchestra.checkpoint import load_hf
  from orchestra.models import ConfigError

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
  sock = bind(FLAGS.host, FLAGS.port)
  print(f"serving {name} on http://{FLAGS.host}:{sock.getsockname()[1]}", flush=True)
  app_ = create_app(engine, tokenizer, name, FLAGS.max_model_len, tool_call_parser=parse_turn,
                    end_of_turn=IM_END)
  server = uvicorn.Server(uvicorn.Config(app_, log_level="warning"))
  server.run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
  """A TCP socket bound to (host, port), as uvicorn binds it; port 0 lets the system pick."""
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise app.UsageError(f"--host={host} --port={port}: cannot bind ({e.strerror}); pick "
                         "another --port, or --port=0 for any free one") from None
  return sock


if __name__ == "__main__":
  app.run(main)
