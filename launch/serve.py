"""Serve a local Hugging Face-format checkpoint over an OpenAI-compatible API (JAX engine).

  python launch/serve.py --model_dir=/tmp/hf --port=8000 [--served_model_name=policy]

It binds the port before it prints "serving NAME on http://HOST:PORT"; with --port=0 the
system picks a free port and that line names it (how the tests start it without a race).

The routes match vLLM's (token-id completions with logprobs, chat with tool
calls, pause/resume/reload_weights), so the trainer and evaluators talk to it
exactly as they talk to a vLLM server. As with vLLM, the weight-control routes exist
only with VLLM_SERVER_DEV_MODE=1 in the environment, and --api_key_env guards /v1
like vLLM's --api-key. --strict refuses request fields vLLM does not know (tests).
"""

import gc
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
flags.DEFINE_float("batch_wait_s", 0.01, "a batch starts once no request arrived for this long "
                   "(requests parsed one by one would otherwise split a wave into batches)")
flags.DEFINE_float("max_batch_wait_s", 0.1, "the longest a request waits for its batch")
flags.DEFINE_integer("max_model_len", 32_768, "prompt + generated tokens per request")
flags.DEFINE_float("prefix_cache_mb", 1024, "keys/values kept for prefix reuse across requests "
                   "(0: no prefix cache; like vLLM's --enable-prefix-caching)")
flags.DEFINE_string("api_key_env", None, "environment variable holding the key /v1 requests "
                    "must send as `Authorization: Bearer <key>` (vLLM's --api-key)")
flags.DEFINE_bool("strict", False, "answer 400 to request fields vLLM does not know (vLLM "
                  "ignores them: tests use this so a payload cannot rely on one)")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import uvicorn

  from orchestra import compilation_cache
  from orchestra.agent.chat_format import CHAT_TEMPLATE, IM_END
  from orchestra.agent.parser import parse_turn
  from orchestra.agent.tokenizer import load_tokenizer
  from orchestra.checkpoint import CheckpointError
  from orchestra.engines.jax_engine import JaxEngine
  from orchestra.engines.server import create_app
  from orchestra.checkpoint import generation_eos_ids, load_hf
  from orchestra.models import ConfigError

  try:
    compilation_cache.enable(FLAGS.compilation_cache)
  except OSError as e:
    raise app.UsageError(str(e)) from None
  # The modules imported so far are never garbage: kept out of the collection each weight
  # reload runs (JaxEngine.update_weights), a tiny model's reload takes 14 ms, not 71.
  gc.freeze()
  try:
    model = load_hf(FLAGS.model_dir, dtype=FLAGS.dtype)
    tokenizer = load_tokenizer(FLAGS.model_dir)
    eos_ids = generation_eos_ids(FLAGS.model_dir)
  except (ConfigError, CheckpointError, OSError) as e:
    raise app.UsageError(f"--model_dir={FLAGS.model_dir}: {e}") from None
  if not tokenizer.chat_template:
    logging.info("tokenizer has no chat_template; using Orchestra's Qwen3-style template")
    tokenizer.chat_template = CHAT_TEMPLATE
  name = FLAGS.served_model_name or os.path.basename(os.path.normpath(FLAGS.model_dir))
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  engine = JaxEngine(model, max_batch_size=FLAGS.max_batch_size, max_wait_s=FLAGS.batch_wait_s,
                     max_gather_s=FLAGS.max_batch_wait_s, pad_id=pad,
                     prefix_cache_mb=FLAGS.prefix_cache_mb)
  del model                         # the engine's: freed at the first reload, not kept here
  api_key = None
  if FLAGS.api_key_env:
    api_key = os.environ.get(FLAGS.api_key_env)
    if not api_key:
      raise app.UsageError(f"--api_key_env={FLAGS.api_key_env}: that variable is not set")
  dev_mode = bool(int(os.environ.get("VLLM_SERVER_DEV_MODE", "0") or "0"))
  sock = bind(FLAGS.host, FLAGS.port)
  print(f"serving {name} on http://{FLAGS.host}:{sock.getsockname()[1]}", flush=True)
  app_ = create_app(engine, tokenizer, name, FLAGS.max_model_len, tool_call_parser=parse_turn,
                    end_of_turn=IM_END, eos_token_ids=eos_ids, dev_mode=dev_mode,
                    api_key=api_key, strict=FLAGS.strict)
  # A SIGTERM waits this long for requests in flight: one held at a pause would otherwise
  # keep the server up (and its parent's PR_SET_PDEATHSIG sends only SIGTERM).
  server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", timeout_graceful_shutdown=5))
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
  from orchestra.host_memory import reexec_with_host_allocator
  reexec_with_host_allocator()      # first: the allocator is chosen at process start
  from orchestra.train.cli import define_compilation_cache_flag
  define_compilation_cache_flag()
  app.run(main)
