"""tau2-style customer-service domains (airline, retail) with tau2-comparable DB hashes.

`load_domain("airline", data_dir)` returns a `Domain` (see base.py). A domain module is
imported only when asked for; each module exposes `build_domain(data_dir) -> Domain`.

  base.py          DB / Toolkit / Task / Domain framework, state hash, tool schemas
  tables.py        a declarative domain's schema.json and its database of tables
  declarative.py   tools.json: tools as specs of reads, checks and writes (no Python)
  airline.py       the 14 airline tools       retail.py   the 16 retail tools
  replay.py        gold replay and the DB criterion
  conversation.py  agent <-> user-simulator episodes over domain tools
  evaluate.py      tau2's reward (DB, COMMUNICATE, ACTION, NL_ASSERTION) and pass^k

License notice: the semantics reproduced here, and the data files they run on
(`shared/data/tau2`, see its SOURCE.md), come from sierra-research/tau2-bench, released
under the MIT License, Copyright (c) 2025 Sierra Research. See NOTICE in this folder.
"""

import importlib
from pathlib import Path

from orchestra.envs.domains.base import (DB, Action, Domain, Task, Toolkit, ToolOutput,
                                         dict_hash, load_splits, load_tasks, to_json_str,
                                         tool, tool_schema)
from orchestra.envs.domains.declarative import declarative_folder, load_declarative_domain

DOMAINS = {
    "airline": "orchestra.envs.domains.airline",
    "retail": "orchestra.envs.domains.retail",
}


def load_domain(name: str, data_dir: Path | str) -> Domain:
  """Loads domain `name` from the data folder `data_dir` (holding `domains/<name>/`).

  `name` is a registered domain (airline, retail); a declarative domain, i.e. a folder
  holding tools.json and schema.json (`name` itself, or `data_dir/domains/<name>`, e.g.
  what launch/synthesize.py writes; see declarative.py); or the import path of any module
  with `build_domain(data_dir) -> Domain`: a ToolScale-format domain of your own is a
  module with a `DB` and a `Toolkit` subclass plus a folder with db.json, policy.md,
  tasks.json and (optionally) split_tasks.json; see `Domain.from_dir`.
  """
  folder = None if name in DOMAINS else declarative_folder(name, data_dir)
  if folder is not None:
    return load_declarative_domain(folder)
  module_name = DOMAINS.get(name, name)
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name is None or not module_name.startswith(e.name):
      raise
    raise ValueError(f"unknown domain {name!r}: not one of {sorted(DOMAINS)} and no module "
                     f"{module_name} to import (a domain of your own is a module with "
                     "build_domain(data_dir))") from None
  if not callable(getattr(module, "build_domain", None)):
    raise ValueError(f"domain {name!r}: module {module_name} has no build_domain(data_dir)")
  return module.build_domain(data_dir)


__all__ = ["DB", "DOMAINS", "Action", "Domain", "Task", "ToolOutput", "Toolkit", "dict_hash",
           "load_domain", "load_splits", "load_tasks", "to_json_str", "tool", "tool_schema"]
