"""Declarative tools: each tool is a spec of what it reads, checks and writes, run by our code.

A domain folder with schema.json (see tables.py) and tools.json loads with no Python
module: `load_domain(folder, folder)`. No model-written code ever runs; a tool is data.

tools.json is a list of tools:

  {"name": "lend_book", "kind": "write", "description": "Lends one copy of a book.",
   "parameters": {"member_id": {"type": "string", "description": "The member's id."},
                  "book_id":   {"type": "string", "description": "The book's id."}},
   "reads":  [{"as": "member", "table": "members", "id": {"arg": "member_id"}},
              {"as": "book",   "table": "books",   "id": {"arg": "book_id"}}],
   "checks": [{"left": {"row": "book", "field": "copies"}, "op": ">", "right": {"value": 0},
               "error": "No copy left"}],
   "writes": [{"op": "update", "row": "book", "add": {"copies": {"value": -1}}},
              {"op": "insert", "table": "loans", "as": "loan",
               "values": {"member_id": {"arg": "member_id"}, "book_id": {"arg": "book_id"},
                          "status": {"value": "active"}}}],
   "returns": {"row": "loan"}}

Values are `{"arg": name}`, `{"value": constant}` or `{"row": binding, "field": f}` (f may
be "id"); `returns` may also be `{"row": binding}` or `{"rows": binding}`. A read binds
one row by `id` ("<table> <id> not found" when absent) or every row matching `where`
({field: value}, a list, maybe empty). Checks compare with == != < <= > >= and fail with
their `error`. Writes: `update` (`set` fields, `add` to numbers), `insert` (a new row with
the next id, every field given), `delete`. A call either applies all its writes or none,
and every written row must still fit the schema (types, enums, references).
Tools of kind "read" must not write; "write" tools must. Calls run like tau2's: any
failure becomes "Error: <reason>" for the agent.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from pathlib import Path
from typing import Any, Mapping

from orchestra.envs.domains.base import (READ, WRITE, Domain, Task, Toolkit,
                                         load_policy_tasks_splits, read_json, tool)
from orchestra.envs.domains.tables import FIELD_TYPES, NAME_RE, Field, Schema, SpecError, TablesDB

COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge}
TOOL_KEYS = {"name", "kind", "description", "parameters", "reads", "checks", "writes", "returns"}


class ToolError(ValueError):
  """A call that cannot run (bad arguments, a missing row, a failed check)."""


@dataclasses.dataclass(frozen=True)
class ToolSpec:
  """One parsed tool of tools.json (see the module docstring)."""

  name: str
  kind: str
  description: str
  parameters: dict[str, dict]
  reads: tuple[dict, ...]
  checks: tuple[dict, ...]
  writes: tuple[dict, ...]
  returns: dict

  def openai_schema(self) -> dict:
    """The OpenAI function schema: every parameter required, typed, described."""
    props = {}
    for pname, p in self.parameters.items():
      props[pname] = {"type": p["type"], "description": p.get("description", "")}
      if p.get("enum"):
        props[pname]["enum"] = list(p["enum"])
    return {"type": "function", "function": {
        "name": self.name, "description": self.description,
        "parameters": {"type": "object", "properties": props, "required": list(self.parameters),
                       "additionalProperties": False}}}


# ---------------------------------------------------------------------- parsing

def parse_tools(raw: Any, schema: Schema, where: str = "tools") -> list[ToolSpec]:
  """Checks tools.json against the schema; a SpecError names the tool and the key at fault."""
  if not isinstance(raw, list) or not raw:
    raise SpecError(f"{where}: expected a non-empty list of tools")
  specs, names = [], set()
  for i, t in enumerate(raw):
    at = f"{where}[{i}]" + (f" ({t.get('name')})" if isinstance(t, Mapping) else "")
    spec = _parse_tool(t, schema, at)
    if spec.name in names:
      raise SpecError(f"{at}: repeats the tool name {spec.name!r}")
    names.add(spec.name)
    specs.append(spec)
  return specs


def _parse_tool(t: Any, schema: Schema, at: str) -> ToolSpec:
  if not isinstance(t, Mapping):
    raise SpecError(f"{at}: expected an object")
  unknown = sorted(set(t) - TOOL_KEYS)
  if unknown:
    raise SpecError(f"{at}: unknown keys {unknown} (allowed: {sorted(TOOL_KEYS)})")
  name, kind = t.get("name"), t.get("kind")
  if not isinstance(name, str) or not NAME_RE.match(name):
    raise SpecError(f"{at}.name: expected a snake_case name, got {name!r}")
  if kind not in (READ, WRITE):
    raise SpecError(f"{at}.kind: expected 'read' or 'write', got {kind!r}")
  params = t.get("parameters") or {}
  for pname, p in params.items():
    if not NAME_RE.match(pname) or not isinstance(p, Mapping) or p.get("type") not in FIELD_TYPES:
      raise SpecError(f"{at}.parameters.{pname}: expected a snake_case name with a type in "
                      f"{FIELD_TYPES}")
  spec = ToolSpec(name, kind, str(t.get("description") or name), dict(params),
                  tuple(t.get("reads") or ()), tuple(t.get("checks") or ()),
                  tuple(t.get("writes") or ()), t.get("returns") or {"value": "OK"})
  if kind == READ and spec.writes:
    raise SpecError(f"{at}.writes: a read tool must not write")
  if kind == WRITE and not spec.writes:
    raise SpecError(f"{at}.writes: a write tool needs at least one write")
  _SpecChecker(spec, schema, at).check()
  return spec


class _SpecChecker:
  """Static checks of one tool: every arg, binding, table and field it names exists."""

  def __init__(self, spec: ToolSpec, schema: Schema, at: str):
    self.spec, self.schema, self.at = spec, schema, at
    self.bound: dict[str, tuple[str, bool]] = {}      # binding -> (table, is one row)

  def check(self) -> None:
    for i, r in enumerate(self.spec.reads):
      self._read(r, f"{self.at}.reads[{i}]")
    for i, c in enumerate(self.spec.checks):
      at = f"{self.at}.checks[{i}]"
      if not isinstance(c, Mapping) or c.get("op") not in COMPARE:
        raise SpecError(f"{at}: expected left, op (one of {list(COMPARE)}), right, error")
      self._value(c.get("left"), f"{at}.left")
      self._value(c.get("right"), f"{at}.right")
    for i, w in enumerate(self.spec.writes):
      self._write(w, f"{self.at}.writes[{i}]")
    self._value(self.spec.returns, f"{self.at}.returns", whole_rows=True)

  def _table(self, name: Any, at: str) -> str:
    if name not in self.schema.tables:
      raise SpecError(f"{at}: no table {name!r} (tables: {sorted(self.schema.tables)})")
    return name

  def _field(self, table: str, field: Any, at: str) -> Field | None:
    if field == "id":
      return None
    if field not in self.schema.tables[table].fields:
      raise SpecError(f"{at}: table {table} has no field {field!r} "
                      f"(fields: {sorted(self.schema.tables[table].fields)})")
    return self.schema.tables[table].fields[field]

  def _binding(self, name: Any, at: str, one: bool = True) -> str:
    if name not in self.bound:
      raise SpecError(f"{at}: no row bound as {name!r} before this point "
                      f"(bound: {sorted(self.bound)})")
    if one and not self.bound[name][1]:
      raise SpecError(f"{at}: {name!r} is a list of rows (a `where` read), not one row")
    return self.bound[name][0]

  def _value(self, v: Any, at: str, whole_rows: bool = False) -> None:
    if not isinstance(v, Mapping) or len(v) not in (1, 2):
      raise SpecError(f"{at}: expected {{'arg'}}, {{'value'}} or {{'row', 'field'}}, got {v!r}")
    if "arg" in v:
      if v["arg"] not in self.spec.parameters:
        raise SpecError(f"{at}: no parameter {v['arg']!r} (parameters: "
                        f"{sorted(self.spec.parameters)})")
    elif "value" in v:
      pass
    elif "row" in v and "field" in v:
      self._field(self._binding(v["row"], at), v["field"], at)
    elif whole_rows and ("row" in v or "rows" in v):
      self._binding(v.get("row", v.get("rows")), at, one="row" in v)
    else:
      raise SpecError(f"{at}: expected {{'arg'}}, {{'value'}} or {{'row', 'field'}}, got {v!r}")

  def _assignments(self, table: str, values: Any, at: str, numeric: bool = False) -> None:
    if not isinstance(values, Mapping):
      raise SpecError(f"{at}: expected an object of field -> value")
    for field, v in values.items():
      spec = self._field(table, field, f"{at}.{field}")
      if spec is None:
        raise SpecError(f"{at}.id: ids are given by the table, not written")
      if numeric and spec.type not in ("integer", "number"):
        raise SpecError(f"{at}.{field}: `add` needs a number field, {field} is {spec.type}")
      self._value(v, f"{at}.{field}")
      why = spec.problem(v["value"]) if "value" in v else None
      if why:
        raise SpecError(f"{at}.{field}: the constant {why}")

  def _read(self, r: Any, at: str) -> None:
    one_key = isinstance(r, Mapping) and ("id" in r) != ("where" in r)
    if not one_key or not isinstance(r.get("as"), str):
      raise SpecError(f"{at}: expected {{'as', 'table', 'id'}} or {{'as', 'table', 'where'}}")
    table = self._table(r.get("table"), f"{at}.table")
    if "id" in r:
      self._value(r["id"], f"{at}.id")
    else:
      if not isinstance(r["where"], Mapping) or not r["where"]:
        raise SpecError(f"{at}.where: expected an object of field -> value")
      for field, v in r["where"].items():
        self._field(table, field, f"{at}.where.{field}")
        self._value(v, f"{at}.where.{field}")
    self.bound[r["as"]] = (table, "id" in r)

  def _write(self, w: Any, at: str) -> None:
    op = w.get("op") if isinstance(w, Mapping) else None
    if op == "insert":
      table = self._table(w.get("table"), f"{at}.table")
      self._assignments(table, w.get("values"), f"{at}.values")
      missing = sorted(set(self.schema.tables[table].fields) - set(w["values"]))
      if missing:
        raise SpecError(f"{at}.values: an insert gives every field; missing {missing}")
      if "as" in w:
        self.bound[w["as"]] = (table, True)
    elif op in ("update", "delete"):
      table = self._binding(w.get("row"), f"{at}.row")
      if op == "update":
        if not w.get("set") and not w.get("add"):
          raise SpecError(f"{at}: an update needs `set` or `add`")
        self._assignments(table, w.get("set") or {}, f"{at}.set")
        self._assignments(table, w.get("add") or {}, f"{at}.add", numeric=True)
    else:
      raise SpecError(f"{at}.op: expected 'update', 'insert' or 'delete', got {op!r}")


# -------------------------------------------------------------------- execution

def _check_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> None:
  missing = [p for p in spec.parameters if p not in arguments]
  unknown = [a for a in arguments if a not in spec.parameters]
  if missing or unknown:
    raise ToolError(f"{spec.name} takes {list(spec.parameters)}; missing {missing}, "
                    f"unexpected {unknown}")
  for pname, p in spec.parameters.items():
    why = Field(p["type"], tuple(p["enum"]) if p.get("enum") else None).problem(arguments[pname])
    if why:
      raise ToolError(f"argument {pname} {why}")


class _Call:
  """One call of a tool on a database: bindings, then checks, then all-or-nothing writes."""

  def __init__(self, spec: ToolSpec, schema: Schema, db: TablesDB, arguments: Mapping):
    self.spec, self.schema, self.db, self.args = spec, schema, db, arguments
    self.bound: dict[str, tuple[str, Any]] = {}       # binding -> (table, id or [ids])

  def value(self, v: Mapping) -> Any:
    if "arg" in v:
      return self.args[v["arg"]]
    if "value" in v:
      return copy.deepcopy(v["value"])
    if "rows" in v:
      table, ids = self.bound[v["rows"]]
      return [self._render(table, i) for i in ids]
    table, row_id = self.bound[v["row"]]
    if "field" not in v:
      return self._render(table, row_id)
    if v["field"] == "id":
      return row_id
    return self.db.table(table)[row_id][v["field"]]

  def _render(self, table: str, row_id: str) -> dict:
    return {"id": row_id, **copy.deepcopy(self.db.table(table)[row_id])}

  def run(self) -> Any:
    for r in self.spec.reads:
      rows = self.db.table(r["table"])
      if "id" in r:
        row_id = self.value(r["id"])
        if row_id not in rows:
          raise ToolError(f"{r['table']} {row_id} not found")
        self.bound[r["as"]] = (r["table"], row_id)
      else:
        where = {f: self.value(v) for f, v in r["where"].items()}
        self.bound[r["as"]] = (r["table"], [i for i, row in rows.items()
                                            if all(row[f] == x for f, x in where.items())])
    for c in self.spec.checks:
      if not _compare(c["op"], self.value(c["left"]), self.value(c["right"])):
        raise ToolError(c.get("error") or f"check failed: {c}")
    if self.spec.writes:
      self._write_all()
    return self.value(self.spec.returns)

  def _write_all(self) -> None:
    before = {t: copy.deepcopy(rows) for t, rows in self.db.tables().items()}
    try:
      touched = [self._write(w) for w in self.spec.writes]
      for table, row_id in touched:
        rows = self.db.table(table)
        why = row_id in rows and self.schema.check_row(table, row_id, rows[row_id],
                                                       self.db.tables())
        if why:
          raise ToolError(f"{table} {why}")
    except Exception:
      self.db.tables().update(before)
      raise

  def _write(self, w: Mapping) -> tuple[str, str]:
    if w["op"] == "insert":
      rows = self.db.table(w["table"])
      row_id = self.schema.next_id(w["table"], rows)
      rows[row_id] = {f: self.value(v) for f, v in w["values"].items()}
      if "as" in w:
        self.bound[w["as"]] = (w["table"], row_id)
      return w["table"], row_id
    table, row_id = self.bound[w["row"]]
    if w["op"] == "delete":
      self._refuse_orphans(table, row_id)
      del self.db.table(table)[row_id]
      return table, row_id
    row = self.db.table(table)[row_id]
    for f, v in (w.get("set") or {}).items():
      row[f] = self.value(v)
    for f, v in (w.get("add") or {}).items():
      amount = self.value(v)
      if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ToolError(f"cannot add {amount!r} to {table}.{f}")
      row[f] = row[f] + amount
    return table, row_id


  def _refuse_orphans(self, table: str, row_id: str) -> None:
    """A row that another row refers to cannot be deleted."""
    for other in self.schema.tables.values():
      for fname, field in other.fields.items():
        if field.ref == table and any(r[fname] == row_id
                                      for r in self.db.table(other.name).values()):
          raise ToolError(f"{table} {row_id} is still referred to by {other.name}.{fname}")


def _compare(op: str, left: Any, right: Any) -> bool:
  try:
    return COMPARE[op](left, right)
  except TypeError:
    raise ToolError(f"cannot compare {left!r} {op} {right!r}") from None


# ---------------------------------------------------------------------- toolkit

class DeclarativeToolkit(Toolkit):
  """Base of the toolkits `make_toolkit` builds; `schema` and `specs` are set per domain."""

  schema: Schema
  specs: dict[str, ToolSpec] = {}

  @classmethod
  def tool_schemas(cls) -> list[dict]:
    return [cls.specs[n].openai_schema() for n in cls.tool_names()]

  def run_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
    spec = self.specs[name]
    _check_arguments(spec, arguments)
    return _Call(spec, self.schema, self.db, arguments).run()


def _tool_method(spec: ToolSpec):
  def method(self, **arguments):
    return self.run_tool(spec.name, arguments)
  method.__name__ = method.__qualname__ = spec.name
  method.__doc__ = spec.description
  return tool(spec.kind)(method)


def make_toolkit(schema: Schema, specs: list[ToolSpec]) -> type[DeclarativeToolkit]:
  """A `Toolkit` class whose tools are `specs`, in order, over a `TablesDB` of `schema`."""
  namespace = {s.name: _tool_method(s) for s in specs}
  clash = sorted(set(namespace) & set(dir(DeclarativeToolkit)))
  if clash:
    raise SpecError(f"tools: names {clash} are reserved (toolkit methods)")
  namespace.update(schema=schema, specs={s.name: s for s in specs})
  return type(f"{schema.domain.title().replace('_', '')}Tools", (DeclarativeToolkit,), namespace)


def declarative_domain(schema_raw: Any, tools_raw: Any, db_raw: Any, policy: str,
                       tasks: list[Task], splits: dict[str, list[str]]) -> Domain:
  """A `Domain` from a declarative domain's parts (schema.json, tools.json, db.json, ...);
  a SpecError names the part and the key at fault."""
  schema = Schema.parse(schema_raw)
  specs = parse_tools(tools_raw, schema)
  schema.check_db(db_raw)
  return Domain(schema.domain, policy, TablesDB.model_validate(db_raw),
                make_toolkit(schema, specs), tasks, splits)


def load_declarative_domain(folder: Path | str) -> Domain:
  """The domain in `folder` (schema.json, tools.json, db.json, policy.md, tasks.json,
  optional split_tasks.json); errors name the file and the key at fault."""
  folder = Path(folder)
  parts = [read_json(folder / f, what) for f, what in (("schema.json", "schema file"),
                                                     ("tools.json", "tool spec file"),
                                                     ("db.json", "database file"))]
  try:
    return declarative_domain(*parts, *load_policy_tasks_splits(folder))
  except SpecError as e:
    raise SpecError(f"{folder}: {e}") from None


def declarative_folder(name: str, data_dir: Path | str) -> Path | None:
  """The folder of a declarative domain named by `name` (a folder, or `data_dir/domains/name`)."""
  for folder in (Path(name), Path(data_dir) / "domains" / name):
    if (folder / "tools.json").is_file():
      return folder
  return None
