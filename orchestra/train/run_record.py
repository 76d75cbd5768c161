"""The run folder's record of its config: written once, never silently rewritten.

A run's `config.json` is the config it started with. A relaunch in the same folder
(a resume, perhaps with overrides) is compared with it field by field:

  * a change to the model's shape (`model.*` except its memory options) or to the data
    (`env.*`, `tools.names`, `seed`) would make the checkpoints or the tasks
    mean something else: the launch is refused, naming the fields;
  * any other change (step counts, learning rates, ...) is accepted and appended to
    `config_overrides.jsonl` beside `config.json`, one line per launch.
"""

from __future__ import annotations

import datetime
import json
import os

from ml_collections import ConfigDict

CONFIG_FILE = "config.json"
OVERRIDES_FILE = "config_overrides.jsonl"
FROZEN_PREFIXES = ("model.", "env.", "tools.names", "seed")
MUTABLE_IN_FROZEN = ("model.remat", "model.attention", "model.logits_chunk")
# Fields the schema gained after run folders were recorded, with the value every earlier run
# used: a folder that lacks one resumes when the config keeps that value.
IMPLIED_BEFORE_RECORDED = {"model.rope_theta": 10_000.0, "model.tie_word_embeddings": False,
                           "model.dtype": "float32", "model.init_from": ""}


class RunRecordError(ValueError):
  """A relaunch whose config contradicts the run folder's; the message names the fields."""


def flatten(tree, prefix: str = "") -> dict:
  """{"a.b.c": leaf} of a nested dict (lists, tuples and empty dicts are leaves)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def _as_json(config: ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def config_changes(recorded: dict, config: ConfigDict) -> dict[str, tuple]:
  """{field: (recorded value, new value)} for every leaf that differs (or is new/gone)."""
  old, new = flatten(recorded), flatten(_as_json(config))
  implied = {k: v for k, v in IMPLIED_BEFORE_RECORDED.items() if k not in old}
  old.update(implied)
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k) and not (k in implied and k not in new)}


def _frozen(field: str) -> bool:
  return field.startswith(FROZEN_PREFIXES) and field not in MUTABLE_IN_FROZEN


def check_against_record(config: ConfigDict, workdir: str) -> dict[str, tuple]:
  """The changes from the folder's recorded config ({} on a new run), writing nothing;
  raises `RunRecordError` for changes to the model shape or the data."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    recorded = json.load(f)
  changes = config_changes(recorded, config)
  frozen = {k: v for k, v in changes.items() if _frozen(k)}
  if frozen:
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in frozen.items())
    raise RunRecordError(f"{workdir} is a run of a different model or data ({listed}); "
                         "start a new --workdir, or relaunch with the recorded values "
                         f"(see {path})")
  return changes


def record_config(config: ConfigDict, workdir: str) -> dict[str, tuple]:
  """Writes `config.json` on a new run; on a relaunch checks and logs the changes
  (`check_against_record`).

  Call once the config is validated and the run's setup built: a launch that fails
  before that records nothing. Returns the accepted changes ({} on a new run).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  changes = check_against_record(config, workdir)
  if not os.path.exists(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)
    return {}
  if changes:
    with open(os.path.join(workdir, OVERRIDES_FILE), "a") as f:
      f.write(json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                          "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
  return changes
