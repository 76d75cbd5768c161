"""A declarative domain's database: typed tables of rows, described by `schema.json`.

schema.json:

  {"domain": "library_loans", "description": "A library lending books to members.",
   "tables": {"books":   {"id_prefix": "bk_", "fields": {
                            "title":  {"type": "string"},
                            "copies": {"type": "integer"}}},
              "loans":   {"id_prefix": "ln_", "fields": {
                            "book_id": {"type": "string", "ref": "books"},
                            "status":  {"type": "string", "enum": ["active", "returned"]}}}}}

A field has a `type` (string, integer, number, boolean), optionally `enum` (the allowed
values), `ref` (the table whose row id it holds) and `nullable`. db.json maps each table to
{row id: {field: value}}; every field is present, ids start with the table's `id_prefix`,
and references resolve. `TablesDB` holds such a database; its dump is db.json itself, so
the state hash is tau2's (sha256 of the sorted JSON).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from pydantic import ConfigDict

from orchestra.envs.domains.base import DB

FIELD_TYPES = ("string", "integer", "number", "boolean")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class SpecError(ValueError):
  """A schema, tool spec or database that cannot work; the message names the path at fault."""


class TablesDB(DB):
  """A database of named tables ({table: {row id: {field: value}}}), checked by a `Schema`."""

  model_config = ConfigDict(extra="allow")

  def table(self, name: str) -> dict[str, dict]:
    return self.__pydantic_extra__[name]

  def tables(self) -> dict[str, dict[str, dict]]:
    """Every table by name (the live dicts: writes go through `declarative._Call`)."""
    return self.__pydantic_extra__


@dataclasses.dataclass(frozen=True)
class Field:
  type: str
  enum: tuple | None = None
  ref: str | None = None
  nullable: bool = False

  def problem(self, value: Any) -> str | None:
    """Why `value` does not fit this field (None when it does); refs are not checked here."""
    if value is None:
      return None if self.nullable else "is null"
    ok = {"string": isinstance(value, str),
          "integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "boolean": isinstance(value, bool)}[self.type]
    if not ok:
      return f"must be {self.type}, got {value!r}"
    if self.enum is not None and value not in self.enum:
      return f"must be one of {list(self.enum)}, got {value!r}"
    return None


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  id_prefix: str
  fields: dict[str, Field]


@dataclasses.dataclass(frozen=True)
class Schema:
  """The parsed schema.json: a domain name, a description, and its tables."""

  domain: str
  description: str
  tables: dict[str, Table]

  @classmethod
  def parse(cls, raw: Any, where: str = "schema") -> "Schema":
    """Checks and parses a schema.json object; a SpecError names the path at fault."""
    if not isinstance(raw, Mapping):
      raise SpecError(f"{where}: expected an object with domain, description and tables")
    domain = raw.get("domain")
    if not isinstance(domain, str) or not NAME_RE.match(domain):
      raise SpecError(f"{where}.domain: expected a snake_case name, got {domain!r}")
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, Mapping) or not tables_raw:
      raise SpecError(f"{where}.tables: expected a non-empty object of tables")
    tables = {name: _parse_table(name, spec, f"{where}.tables.{name}")
              for name, spec in tables_raw.items()}
    for table in tables.values():
      for fname, field in table.fields.items():
        if field.ref is not None and field.ref not in tables:
          raise SpecError(f"{where}.tables.{table.name}.fields.{fname}.ref: no table "
                          f"{field.ref!r} (tables: {sorted(tables)})")
    return cls(domain, str(raw.get("description", "")), tables)

  def check_row(self, table: str, row_id: Any, row: Any, db: Mapping | None) -> str | None:
    """Why a row does not fit `table` (None when it does); refs are resolved against `db`."""
    spec = self.tables[table]
    if not isinstance(row_id, str) or not row_id.startswith(spec.id_prefix):
      return f"id {row_id!r} must be a string starting with {spec.id_prefix!r}"
    if not isinstance(row, Mapping):
      return f"row {row_id} must be an object of fields"
    missing = sorted(set(spec.fields) - set(row))
    unknown = sorted(set(row) - set(spec.fields))
    if missing or unknown:
      return f"row {row_id}: missing fields {missing}, unknown fields {unknown}"
    for fname, field in spec.fields.items():
      value = row[fname]
      why = field.problem(value)
      if why is None and field.ref and value is not None and db is not None:
        why = None if value in db.get(field.ref, {}) else f"refers to no {field.ref} row {value!r}"
      if why:
        return f"row {row_id}: field {fname} {why}"
    return None

  def check_db(self, data: Any) -> None:
    """Raises SpecError naming the table/row/field when `data` (db.json) breaks the schema."""
    if not isinstance(data, Mapping) or set(data) != set(self.tables):
      have = sorted(data) if isinstance(data, Mapping) else type(data).__name__
      raise SpecError(f"db: expected exactly the tables {sorted(self.tables)}, got {have}")
    for table, rows in data.items():
      if not isinstance(rows, Mapping):
        raise SpecError(f"db.{table}: expected an object of rows by id")
      for row_id, row in rows.items():
        why = self.check_row(table, row_id, row, data)
        if why:
          raise SpecError(f"db.{table}: {why}")

  def next_id(self, table: str, rows: Mapping[str, Any]) -> str:
    """The next free id: the prefix + (largest numeric suffix + 1), zero-padded to 3."""
    prefix = self.tables[table].id_prefix
    numbers = [int(k[len(prefix):]) for k in rows if k[len(prefix):].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1:03d}"

  def to_json(self) -> dict:
    return {"domain": self.domain, "description": self.description,
            "tables": {t.name: {"id_prefix": t.id_prefix, "fields": {
                n: {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in dataclasses.asdict(f).items() if v not in (None, False)}
                for n, f in t.fields.items()}} for t in self.tables.values()}}


def _parse_table(name: str, spec: Any, where: str) -> Table:
  if not NAME_RE.match(str(name)):
    raise SpecError(f"{where}: table names are snake_case, got {name!r}")
  if not isinstance(spec, Mapping) or not isinstance(spec.get("fields"), Mapping):
    raise SpecError(f"{where}: expected an object with id_prefix and fields")
  prefix = spec.get("id_prefix")
  if not isinstance(prefix, str) or not prefix:
    raise SpecError(f"{where}.id_prefix: expected a non-empty string, got {prefix!r}")
  fields = {}
  for fname, f in spec["fields"].items():
    at = f"{where}.fields.{fname}"
    if not NAME_RE.match(str(fname)) or fname == "id":
      raise SpecError(f"{at}: field names are snake_case and not 'id'")
    if not isinstance(f, Mapping) or f.get("type") not in FIELD_TYPES:
      raise SpecError(f"{at}.type: expected one of {FIELD_TYPES}")
    unknown = sorted(set(f) - {"type", "enum", "ref", "nullable"})
    if unknown:
      raise SpecError(f"{at}: unknown keys {unknown}")
    enum = f.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
      raise SpecError(f"{at}.enum: expected a non-empty list")
    field = Field(f["type"], tuple(enum) if enum else None, f.get("ref"), bool(f.get("nullable")))
    for value in field.enum or ():
      if field.problem(value):
        raise SpecError(f"{at}.enum: {value!r} is not a {field.type}")
    if field.ref is not None and field.type != "string":
      raise SpecError(f"{at}: a ref field holds a row id, so its type is string")
    fields[fname] = field
  if not fields:
    raise SpecError(f"{where}.fields: a table needs at least one field")
  return Table(name, prefix, fields)
