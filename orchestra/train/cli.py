"""Flag parsing for the launch scripts: a bad flag or config override is one clear line."""

from __future__ import annotations

import os
import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run(main, flags_parser=parse_flags)`: like absl's, without a traceback on errors.

  Unknown config fields (`--config.rl.totl_steps=3`) and malformed values end
  with `<script>: error: <what>` and exit status 2.
  """
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse failure is the user's input
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    message = str(message).replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    print(f"{os.path.basename(argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)
