"""tau2-style domain framework: a typed DB, a toolkit of tools, tasks, and a `Domain`.

Semantics follow sierra-research/tau2-bench (MIT) so that DB hashes and tool outputs are
comparable with published tau2-Bench numbers (see shared/data/tau2/STATE_HASH.md):

* `DB` is a pydantic v2 model. `dump()` is the python-mode `model_dump()` (every declared
  field present, None -> null, numbers in their schema type) and `db_hash()` is
  sha256(json.dumps(dump, sort_keys=True, default=str)) -- tau2's `get_dict_hash`.
* `@tool(kind)` marks `Toolkit` methods as tools (tau2's `is_tool`); only `write` tools
  mutate state unless `mutates_state` says otherwise. Tools are listed in class
  definition order, subclass tools first (tau2's `ToolKitType` metaclass).
* `tool_schema(func)` derives the OpenAI function schema the way tau2's `Tool` does: a
  pydantic model named "parameters" built from the signature, with per-argument
  descriptions from the Google-style docstring `Args:` section; the description is the
  docstring's first line, plus "\\n\\n" and the rest of the text before the first section.
* `Toolkit.execute(name, arguments)` is tau2's `Environment.get_response`: the arguments
  are passed to the Python method AS GIVEN (tau2 does not validate them against the
  schema; tools convert dicts into models themselves), any exception becomes
  "Error: <str(e)>" with error=True, and results are rendered with `to_json_str`.
  Unknown tool -> "Error: Tool '<name>' not found.".
* Tasks mirror tau2's `Task`/`EvaluationCriteria`/`Action`/`InitialState` models
  (unknown keys are ignored, as in tau2, except on `Task` where they are kept).
* A task's `initial_state` is applied like tau2's `Environment.set_state`: the
  `initialization_data.agent_data` dict is deep-merged into the DB dump and re-validated,
  `initialization_actions` call toolkit methods directly, and the mutating tool calls in
  `message_history` are re-executed (their recorded outputs are not compared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
import typing
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestra.envs.domains.db_snapshot import DBSnapshot, dump_json, sorted_json

READ, WRITE, THINK, GENERIC = "read", "write", "think", "generic"
TOOL_KINDS = (READ, WRITE, THINK, GENERIC)
_TOOL_ATTR = "__orchestra_tool_kind__"
_MUTATES_ATTR = "__orchestra_mutates_state__"


# ----------------------------------------------------------------------------- DB

def dict_hash(obj: Any) -> str:
  """tau2's `get_dict_hash`: sha256 hex of json.dumps(obj, sort_keys=True, default=str)."""
  return hashlib.sha256(sorted_json(obj).encode()).hexdigest()


def read_json(path: Path | str, what: str) -> Any:
  """Reads a JSON file, raising one clear error that names the file on failure."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{what} not found: {path} (point data_dir at the tau2 data folder)")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e})") from None


class DB(BaseModel):
  """Base class of a domain database (tau2's `DB`): a pydantic model, no extra top-level keys.

  Subclasses declare their tables as typed fields, e.g. `users: dict[str, User]`.
  """

  model_config = ConfigDict(extra="forbid")

  @classmethod
  def load(cls, path: Path | str):
    """Loads and validates a db.json; errors name the file and the failing field path."""
    data = read_json(path, f"{cls.__name__} file")
    try:
      return cls.model_validate(data)
    except pydantic.ValidationError as e:
      raise ValueError(f"{path}: does not match {cls.__name__}: {e}") from None

  def dump(self) -> dict:
    """Python-mode dump: every declared field present, nested models as dicts."""
    return self.model_dump()

  def db_hash(self) -> str:
    """The state hash tau2's EnvironmentEvaluator compares: `dict_hash(self.dump())`, from
    cached pieces for the records of a `Domain.fresh_db` copy that no code has read."""
    if type(self).dump is not DB.dump:         # a subclass's own dump defines its hash
      return dict_hash(self.dump())
    return hashlib.sha256(dump_json(self).encode()).hexdigest()


def deep_merge(base: dict, update: Mapping) -> dict:
  """Merges `update` into `base` in place, recursing into dicts (addict's `Dict.update`)."""
  for key, value in update.items():
    if isinstance(value, Mapping) and isinstance(base.get(key), dict):
      deep_merge(base[key], value)
    else:
      base[key] = value
  return base


# -------------------------------------------------------------------------- tools

def tool(kind: str = READ, mutates_state: Optional[bool] = None) -> Callable:
  """Marks a `Toolkit` method as a tool (tau2's `is_tool`).

  Args:
    kind: "read", "write", "think" or "generic".
    mutates_state: whether calls change the DB; defaults to `kind == "write"`. Only
      mutating tools are re-executed when a trajectory is replayed.
  """
  if kind not in TOOL_KINDS:
    raise ValueError(f"tool kind must be one of {TOOL_KINDS}, got {kind!r}")
  mutates = (kind == WRITE) if mutates_state is None else bool(mutates_state)

  def mark(func):
    setattr(func, _TOOL_ATTR, kind)
    setattr(func, _MUTATES_ATTR, mutates)
    return func  # not wrapped: error messages keep the method's own qualname, as in tau2

  return mark


_SECTION_RE = re.compile(r"^(Arguments|Args|Parameters|Params|Raises|Exceptions|Except|"
                         r"Attributes|Example|Examples|Returns|Yields):[ \t\r\f\v]*$", re.M)
_ARG_SECTIONS = ("Arguments", "Args", "Parameters", "Params")


def parse_docstring(doc: Optional[str]) -> tuple[str, str, dict[str, str]]:
  """Google-style docstring -> (short description, long description, {arg: description}).

  Matches docstring_parser's Google style as tau2 uses it: the short description is the
  first line, the long one the rest of the text before the first section title.
  """
  text = inspect.cleandoc(doc or "")
  first = _SECTION_RE.search(text)
  desc, meta = (text[:first.start()], text[first.start():]) if first else (text, "")
  short, _, long = desc.partition("\n")
  args: dict[str, str] = {}
  titles = list(_SECTION_RE.finditer(meta))
  for i, m in enumerate(titles):
    if m.group(1) not in _ARG_SECTIONS:
      continue
    end = titles[i + 1].start() if i + 1 < len(titles) else len(meta)
    body = inspect.cleandoc(meta[m.end():end].strip("\n"))
    entries: list[list[str]] = []
    for line in body.splitlines():
      if line and not line[0].isspace():
        entries.append([line])
      elif entries:
        entries[-1].append(line)
    for entry in entries:
      head, _, first_line = entry[0].partition(":")
      name = head.split(" ")[0].strip()
      first_line = first_line[1:] if first_line.startswith(" ") else first_line
      rest = inspect.cleandoc("\n".join(entry[1:]))
      args[name] = (first_line + "\n" + rest if rest else first_line).strip()
  return short.strip(), long.strip(), args


def tool_schema(func: Callable) -> dict:
  """OpenAI function schema of a tool, exactly as tau2's `Tool.openai_schema` derives it."""
  short, long, arg_docs = parse_docstring(func.__doc__)
  hints = typing.get_type_hints(func, include_extras=True)
  params = {}
  for i, (name, param) in enumerate(inspect.signature(func).parameters.items()):
    if i == 0 and name == "self":
      continue
    anno = hints.get(name, Any)
    default = ... if param.default is param.empty else param.default
    if name in arg_docs:
      default = Field(default, description=arg_docs[name])
    params[name] = (anno, default)
  model = pydantic.create_model("parameters", **params)
  return {"type": "function",
          "function": {"name": func.__name__,
                       "description": (short + "\n\n" + long) if long else (short or func.__name__),
                       "parameters": model.model_json_schema()}}


def to_json_str(resp: Any) -> str:
  """tau2's `Environment.to_json_str`: str unchanged, else json.dumps(default=str) of the dump.

  Models dump in field-declaration order (no sort_keys). Quirk kept: ints/floats/bools
  nested inside lists/dicts become strings ("5"), as upstream.
  """
  if isinstance(resp, str):
    return resp
  return json.dumps(_plain(resp), default=str)


def _plain(x: Any) -> Any:
  if isinstance(x, BaseModel):
    return x.model_dump()
  if isinstance(x, str) or x is None:
    return x
  if isinstance(x, (int, float, bool)):
    return str(x)
  if isinstance(x, list):
    return [_plain(v) for v in x]
  if isinstance(x, tuple):
    return tuple(_plain(v) for v in x)
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (datetime, date)):
    return x.isoformat()
  raise ValueError(f"Unsupported type: {type(x)}")


@dataclasses.dataclass(frozen=True)
class ToolOutput:
  """What the model sees after a tool call: the text, and whether it is an error."""

  text: str
  error: bool


class Toolkit:
  """A set of tools over one DB instance (tau2's `ToolKitBase`).

  Subclasses define methods decorated with `@tool(...)`; `self.db` is the live DB.
  """

  _tool_names: tuple[str, ...] = ()
  _schema_cache: Optional[list[dict]] = None

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    own = [n for n, f in cls.__dict__.items() if hasattr(f, _TOOL_ATTR)]
    cls._tool_names = tuple(own + [n for n in cls._tool_names if n not in own])
    cls._schema_cache = None

  def __init__(self, db: DB):
    self.db = db

  @classmethod
  def tool_names(cls) -> list[str]:
    """Tool names in tau2's order."""
    return list(cls._tool_names)

  @classmethod
  def has_tool(cls, name: str) -> bool:
    return name in cls._tool_names

  @classmethod
  def tool_kind(cls, name: str) -> str:
    """"read" / "write" / "think" / "generic"."""
    return getattr(getattr(cls, name), _TOOL_ATTR)

  @classmethod
  def mutates_state(cls, name: str) -> bool:
    """Whether the tool changes the DB; unknown names count as mutating (tau2's fallback)."""
    if not cls.has_tool(name):
      return True
    return getattr(getattr(cls, name), _MUTATES_ATTR, True)

  @classmethod
  def tool_schemas(cls) -> list[dict]:
    """OpenAI function schemas of all tools, in order (a fresh copy each call)."""
    if cls._schema_cache is None:
      cls._schema_cache = [tool_schema(getattr(cls, n)) for n in cls._tool_names]
    return json.loads(json.dumps(cls._schema_cache))

  def call(self, name: str, /, **kwargs) -> Any:
    """Calls a tool with raw keyword arguments; raises what the tool raises (tau2's `use_tool`)."""
    if name not in self._tool_names:
      raise ValueError(f"Tool '{name}' not found.")
    return getattr(self, name)(**kwargs)

  def execute(self, name: str, arguments: Optional[Mapping] = None) -> ToolOutput:
    """Runs one tool call and renders it the way tau2 shows it to the agent. Never raises."""
    try:
      if arguments is None:
        arguments = {}
      if not isinstance(arguments, Mapping):
        raise TypeError(f"tool arguments must be a JSON object, got {type(arguments).__name__}")
      resp = self.call(name, **arguments)
    except Exception as e:  # tau2 turns every exception into an error observation
      return ToolOutput(f"Error: {e}", True)
    return ToolOutput(to_json_str(resp), False)

  def db_hash(self) -> str:
    return self.db.db_hash()

  def update_db(self, update: Mapping) -> None:
    """Deep-merges `update` into the DB dump and re-validates it (tau2's `update_db`)."""
    self.db = type(self.db).model_validate(deep_merge(self.db.dump(), update or {}))

  def run_function(self, func_name: str, arguments: Mapping) -> Any:
    """Calls any toolkit method by name, as tau2's `run_env_function_call` does."""
    func = getattr(self, func_name, None)
    if func is None or not callable(func):
      raise ValueError(f"Function {func_name} not found in {type(self).__name__}")
    return func(**arguments)


# -------------------------------------------------------------------------- tasks

class _Loose(BaseModel):
  model_config = ConfigDict(extra="ignore")


class Action(_Loose):
  """One gold tool call (tau2's `Action`)."""

  action_id: str
  requestor: Literal["user", "assistant"] = "assistant"
  name: str
  arguments: dict
  info: Optional[str] = None
  compare_args: Optional[list[str]] = None


class EnvFunctionCall(_Loose):
  """A direct call of a toolkit method, used by `initialization_actions`."""

  env_type: Literal["user", "assistant"]
  func_name: str
  arguments: dict


class EnvAssertion(EnvFunctionCall):
  assert_value: bool = True
  message: Optional[str] = None


class EvaluationCriteria(_Loose):
  """What a task is graded on (tau2's `EvaluationCriteria`)."""

  actions: Optional[list[Action]] = None
  env_assertions: Optional[list[EnvAssertion]] = None
  communicate_info: Optional[list[str]] = None
  nl_assertions: Optional[list[str]] = None
  reward_basis: list[Literal["DB", "ENV_ASSERTION", "NL_ASSERTION", "ACTION", "COMMUNICATE"]] = (
      Field(default_factory=lambda: ["DB", "COMMUNICATE"]))


class InitializationData(_Loose):
  agent_data: Optional[dict] = None
  user_data: Optional[dict] = None


class InitialState(_Loose):
  """Task-specific starting state (tau2's `InitialState`); messages kept as raw dicts."""

  initialization_data: Optional[InitializationData] = None
  initialization_actions: Optional[list[EnvFunctionCall]] = None
  message_history: Optional[list[dict]] = None


class StructuredUserInstructions(_Loose):
  domain: str
  reason_for_call: str
  known_info: Optional[str] = None
  unknown_info: Optional[str] = None
  task_instructions: str


class UserScenario(_Loose):
  persona: Optional[str] = None
  instructions: Union[StructuredUserInstructions, str]


class Task(BaseModel):
  """One task of tasks.json (tau2's `Task`); extra keys such as `annotations` are kept."""

  model_config = ConfigDict(extra="allow")

  id: str
  description: Optional[dict] = None
  user_scenario: UserScenario
  ticket: Optional[str] = None
  initial_state: Optional[InitialState] = None
  evaluation_criteria: Optional[EvaluationCriteria] = None
  issues: Optional[list[dict]] = None

  @property
  def gold_actions(self) -> list[Action]:
    """The reference trajectory (empty when there are no evaluation criteria)."""
    crit = self.evaluation_criteria
    return list(crit.actions or []) if crit is not None else []


def load_tasks(path: Path | str) -> list[Task]:
  """Parses tasks.json; a malformed task raises naming the file, the index and the task id."""
  rows = read_json(path, "tasks file")
  if not isinstance(rows, list):
    raise ValueError(f"{path}: expected a JSON list of tasks, got {type(rows).__name__}")
  tasks, seen = [], set()
  for i, row in enumerate(rows):
    tid = row.get("id") if isinstance(row, dict) else None
    try:
      task = Task.model_validate(row)
    except pydantic.ValidationError as e:
      raise ValueError(f"{path}: task #{i} (id={tid!r}) is malformed: {e}") from None
    if task.id in seen:
      raise ValueError(f"{path}: task #{i} repeats id {task.id!r}")
    seen.add(task.id)
    tasks.append(task)
  return tasks


def load_splits(path: Path | str, task_ids: Optional[list[str]] = None) -> dict[str, list[str]]:
  """Parses split_tasks.json ({split: [task id, ...]}), checking ids against `task_ids`."""
  splits = read_json(path, "splits file")
  if not isinstance(splits, dict) or not all(
      isinstance(v, list) and all(isinstance(t, str) for t in v) for v in splits.values()):
    raise ValueError(f"{path}: expected an object mapping split name -> list of task id strings")
  if task_ids is not None:
    known = set(task_ids)
    for name, ids in splits.items():
      missing = [t for t in ids if t not in known]
      if missing:
        raise ValueError(f"{path}: split {name!r} names unknown task ids {missing[:5]}")
  return splits


def load_policy_tasks_splits(folder: Path) -> tuple[str, list[Task], dict[str, list[str]]]:
  """A domain folder's policy.md, tasks.json and (optional) split_tasks.json."""
  policy_path = folder / "policy.md"
  if not policy_path.is_file():
    raise FileNotFoundError(f"policy not found: {policy_path}")
  tasks = load_tasks(folder / "tasks.json")
  split_path = folder / "split_tasks.json"
  splits = load_splits(split_path, [t.id for t in tasks]) if split_path.is_file() else {}
  return policy_path.read_text(), tasks, splits


# ------------------------------------------------------------------------- domain

class Domain:
  """A loaded domain: policy, tasks, splits, tool schemas, and fresh environments.

  db.json is parsed and validated once; `new_env()` builds every environment an independent
  DB from a snapshot of it, copying a record when code first reads it (`DBSnapshot`: a
  whole unpickle was ~0.1 s for airline's 7 MB, 24 ms for retail).
  """

  def __init__(self, name: str, policy: str, db: DB, toolkit_cls: type[Toolkit],
               tasks: list[Task], splits: dict[str, list[str]],
               user_toolkit_cls: Optional[type[Toolkit]] = None):
    self.name = name
    self.policy = policy
    self.toolkit_cls = toolkit_cls
    self.user_toolkit_cls = user_toolkit_cls
    self.tasks = tasks
    self.splits = splits
    self._db_snapshot = DBSnapshot(db)
    self._by_id = {t.id: t for t in tasks}
    self.cache: dict = {}  # free-form per-domain cache (e.g. gold hashes, see replay.py)

  @classmethod
  def from_dir(cls, name: str, data_dir: Path | str, db_cls: type[DB],
               toolkit_cls: type[Toolkit], **kwargs) -> "Domain":
    """Loads `<data_dir>/domains/<name>/` (or `data_dir` itself if it holds db.json)."""
    root = Path(data_dir)
    folder = root if (root / "db.json").is_file() else root / "domains" / name
    if not folder.is_dir():
      raise FileNotFoundError(f"tau2 domain folder not found: {folder} (data_dir={root})")
    policy, tasks, splits = load_policy_tasks_splits(folder)
    return cls(name, policy, db_cls.load(folder / "db.json"), toolkit_cls, tasks, splits,
               **kwargs)

  def initial_db_hash(self) -> str:
    """Hash of the shipped DB (before any task initial state), computed once."""
    if "initial_db_hash" not in self.cache:
      self.cache["initial_db_hash"] = self.fresh_db().db_hash()
    return self.cache["initial_db_hash"]

  def fresh_db(self) -> DB:
    """An independent copy of the initial DB (records are copied when code first reads
    them: `db_snapshot.CopyOnAccessTable`)."""
    return self._db_snapshot.fresh()

  def new_env(self, task: Optional[Task] = None) -> Toolkit:
    """A fresh toolkit over a fresh DB, with `task.initial_state` applied if given."""
    env = self.toolkit_cls(self.fresh_db())
    if task is not None and task.initial_state is not None:
      apply_initial_state(env, task.initial_state)
    return env

  def tool_schemas(self) -> list[dict]:
    return self.toolkit_cls.tool_schemas()

  def task(self, task_id: str) -> Task:
    if task_id not in self._by_id:
      raise KeyError(f"domain {self.name!r} has no task {task_id!r}")
    return self._by_id[task_id]

  def split(self, name: str) -> list[Task]:
    if name not in self.splits:
      raise KeyError(f"domain {self.name!r} has no split {name!r} (has {sorted(self.splits)})")
    return [self._by_id[t] for t in self.splits[name]]


def apply_initial_state(env: Toolkit, state: InitialState) -> None:
  """Applies a task's initial state to an assistant toolkit, as tau2's `set_state` does.

  User-side data/actions need a user toolkit, which airline and retail do not have.
  """
  init = state.initialization_data
  if init is not None and init.agent_data is not None:
    env.update_db(init.agent_data)
  if init is not None and init.user_data is not None:
    raise ValueError("initial_state.initialization_data.user_data needs user tools, "
                     "which this domain does not have")
  for call in state.initialization_actions or []:
    if call.env_type != "assistant":
      raise ValueError(f"initialization action {call.func_name!r} targets env_type "
                       f"{call.env_type!r}; this domain has no user tools")
    env.run_function(call.func_name, call.arguments)
  for msg in state.message_history or []:
    for tc in msg.get("tool_calls") or []:
      name = tc.get("name")
      if tc.get("requestor", "assistant") != "assistant":
        raise ValueError(f"message_history tool call {name!r} is a user tool call; "
                         "this domain has no user tools")
      if env.has_tool(name) and env.mutates_state(name):
        env.execute(name, tc.get("arguments") or {})
