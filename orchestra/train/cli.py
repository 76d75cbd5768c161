"""Flag parsing for the launch scripts: a bad flag or config override is one clear line."""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

from absl import flags

from orchestra import compilation_cache


def define_compilation_cache_flag() -> None:
  """`--compilation_cache`: the folder of compiled XLA programs kept across runs
  (`orchestra/compilation_cache.py`); `parse_flags` turns it on."""
  flags.DEFINE_string("compilation_cache", compilation_cache.default_dir(),
                      "folder of compiled programs reused across runs (default: "
                      "$JAX_COMPILATION_CACHE_DIR or ~/.cache/orchestra/xla; empty: off)")


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run(main, flags_parser=parse_flags)`: like absl's, without a traceback on errors.

  A `--config` file that does not exist, unknown config fields
  (`--config.rl.totl_steps=3`, answered with the nearest valid names) and malformed
  values end with `<script>: error: <what>` and exit status 2.

  Library logs (orbax's ~1,000 INFO lines per run, JAX's) default to warnings and
  errors only (`--verbosity=-1`); `--verbosity=0` or `1` brings them back. A script that
  defines `--compilation_cache` gets the persistent compilation cache it names.
  """
  script = os.path.basename(argv[0])
  config_path = _flag_value(argv, "config")
  if config_path is not None and not os.path.isfile(config_path.split(":")[0]):
    _fail(script, f"--config={config_path}: no such file")
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse failure is the user's input
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    message = str(message).replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    _fail(script, _unknown_field(argv, config_path) or message)
  if flags.FLAGS["verbosity"].using_default_value:   # absl would raise it to INFO next
    flags.FLAGS.verbosity = -1
  if "compilation_cache" in flags.FLAGS:
    try:
      compilation_cache.enable(flags.FLAGS.compilation_cache)
    except (OSError, ValueError) as e:
      _fail(script, str(e))
  return rest


def _fail(script: str, message: str):
  print(f"{script}: error: {message}", file=sys.stderr)
  sys.exit(2)


def _flag_value(argv: list[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unknown_field(argv: list[str], config_path: str | None) -> str | None:
  """'config.rl.totl_steps: no such field; nearest: total_steps' for the first bad override."""
  if config_path is None:
    return None
  try:
    spec = importlib.util.spec_from_file_location("_config_for_message", config_path.split(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # noqa: BLE001 - only for a better message; fall back to the raw one
    return None
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    parts = arg[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for depth, part in enumerate(parts):
      if not hasattr(node, "keys"):
        break
      if part not in node:
        name = ".".join(["config", *parts[:depth + 1]])
        fields = sorted(node.keys())
        nearest = difflib.get_close_matches(part, fields, n=3) or fields
        return f"{name}: no such field; nearest valid: {', '.join(nearest)}"
      node = node[part]
  return None
