"""Export a training checkpoint to a Hugging Face folder (loads in transformers and vLLM).

  python launch/export_hf.py --workdir=runs/tiny --out=/tmp/hf [--step=200] [--dtype=float32]
"""

import os

from absl import app, flags

flags.DEFINE_string("workdir", None, "run folder holding checkpoints/", required=True)
flags.DEFINE_integer("step", None, "step to export (default: the newest complete one)")
flags.DEFINE_string("out", None, "output folder (default: WORKDIR/hf/step_N)")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "weight dtype of the export")
flags.DEFINE_string("tokenizer_dir", None, "folder whose tokenizer files are copied alongside")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from orchestra.checkpoint import CheckpointError
  from orchestra.checkpoint.export import restore_policy
  from orchestra.checkpoint.hf import check_export_destination
  from orchestra.checkpoint import save_hf

  try:
    if FLAGS.out:                     # refuse a bad destination before the slow restore
      check_export_destination(os.path.abspath(FLAGS.out))
    model, step = restore_policy(FLAGS.workdir, FLAGS.step)
    out = FLAGS.out or os.path.join(FLAGS.workdir, "hf", f"step_{step}")
    path = save_hf(model, out, tokenizer_dir=FLAGS.tokenizer_dir, dtype=FLAGS.dtype)
  except CheckpointError as e:
    raise app.UsageError(str(e)) from None
  print(f"exported step {step} ({FLAGS.dtype}) to {path}")


if __name__ == "__main__":
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
