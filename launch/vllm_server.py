"""Print (or run) the `vllm serve` command an Orchestra rollout server needs.

  python launch/vllm_server.py --model_dir=/ckpt/hf/step_0 --port=8000 --tp=2          # prints it
  python launch/vllm_server.py --model_dir=/ckpt/hf/step_0 --port=8000 --tp=2 --exec   # runs it

The flags that matter for RL: `--logprobs-mode processed_logprobs` (log-probs
after temperature/top-p, matching what the learner recomputes), `--max-logprobs -1`,
the hermes tool-call parser, and VLLM_SERVER_DEV_MODE=1 for the weight-reload routes.
"""

import os
import shlex

from absl import app, flags

flags.DEFINE_string("model_dir", None, "HF folder to serve (e.g. from launch/export_hf.py)",
                    required=True)
flags.DEFINE_integer("port", 8000, "TCP port")
flags.DEFINE_integer("tp", 1, "tensor-parallel size (GPUs per server)")
flags.DEFINE_string("served_model_name", None, "model name reported to clients")
flags.DEFINE_integer("max_model_len", None, "context length (prompt + generation)")
flags.DEFINE_float("gpu_memory_utilization", 0.9, "fraction of GPU memory vLLM may take")
flags.DEFINE_bool("exec", False, "replace this process with vllm serve instead of printing")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from orchestra.engines.http_engine import vllm_serve_command
  argv, env = vllm_serve_command(
      FLAGS.model_dir, port=FLAGS.port, served_model_name=FLAGS.served_model_name,
      tensor_parallel_size=FLAGS.tp, max_model_len=FLAGS.max_model_len,
      gpu_memory_utilization=FLAGS.gpu_memory_utilization)
  if FLAGS.exec:
    os.execvpe(argv[0], argv, {**os.environ, **env})
  print(" ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(argv))


if __name__ == "__main__":
  app.run(main)
