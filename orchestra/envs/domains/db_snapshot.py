"""Fresh copies of a domain DB that copy only the records code reads, and their tau2 hash.

Every episode starts on its own copy of the domain's DB and ends with its hash; the
evaluator's replay does both again. For retail (1,550 records) a full copy is a 24 ms
unpickle and a hash 40 ms (`model_dump`, then `json.dumps(sort_keys=True)`), ~130 ms per
episode on an idle core, while an episode touches a handful of records.

`DBSnapshot.fresh()` builds the DB around `CopyOnAccessTable`s: each top-level table (a
dict keyed by str) starts out holding the snapshot's own record objects and replaces a
record by a private copy (unpickled from that record's bytes) the first time Python code
is handed it (`[key]`, `get`, `values`, `items`, `pop`, `setdefault`, `copy`, `dict(...)`,
`{**t}`, pickle, deepcopy). So code mutates only copies, and a record still holding the
snapshot's object is unchanged since the snapshot. `dump_json` uses that: it reuses those
records' JSON (made once, from the snapshot's `model_dump`), dumps the others with the DB's
own serializer (`model_dump(include=...)`), and assembles the exact text of tau2's hash
input with `json.dumps`'s default separators:

  json.dumps(d, sort_keys=True) == "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(d[k], ...)}"
                                                  for k in sorted(d)) + "}"

at the top level and inside each table (str keys only; a table given another key is dumped
whole). Pydantic's `model_dump` reads the tables' raw values, the snapshot's records among
them, which are the right values.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from pydantic import BaseModel

_PICKLE = pickle.HIGHEST_PROTOCOL
_MISSING = object()


def sorted_json(obj: Any) -> str:
  """The text tau2's `get_dict_hash` hashes: json.dumps(obj, sort_keys=True, default=str)."""
  return json.dumps(obj, sort_keys=True, default=str)


def _json_part(key: str, value: Any) -> str:
  """'"key": <sorted_json of value>', one entry of a dict's sorted_json."""
  return f"{json.dumps(key)}: {sorted_json(value)}"


class _TableSnapshot:
  """One table as it was: its records (never handed out), their pickles, and the JSON
  entries of their dump."""

  def __init__(self, records: dict[str, Any], dumped: dict[str, Any]):
    self.records = records
    self.pickles = {key: pickle.dumps(value, _PICKLE) for key, value in records.items()}
    self.parts = {key: _json_part(key, dumped[key]) for key in records}

  def unchanged(self, key: str, value: Any) -> bool:
    return self.records.get(key, _MISSING) is value


class CopyOnAccessTable(dict):
  """A DB table that hands out private copies of the snapshot's records (see the module
  docstring). Keys, `in`, `len`, assignment and deletion are plain dict operations.

  Calling dict's own methods on it unbound (`dict.get(t, k)`, `dict.values(t)`) skips the
  copy and hands out the snapshot's record: code must not (none in this package does).
  """

  __slots__ = ("_snapshot",)

  def __init__(self, snapshot: _TableSnapshot):
    super().__init__(snapshot.records)
    self._snapshot = snapshot

  def _own(self, key):
    value = dict.__getitem__(self, key)
    if self._snapshot.unchanged(key, value):
      value = pickle.loads(self._snapshot.pickles[key])
      dict.__setitem__(self, key, value)
    return value

  def _own_all(self) -> None:
    for key in list(dict.keys(self)):
      self._own(key)

  def __getitem__(self, key):
    return self._own(key)

  def get(self, key, default=None):
    return self._own(key) if key in self else default

  def setdefault(self, key, default=None):
    return self._own(key) if key in self else dict.setdefault(self, key, default)

  def pop(self, key, *default):
    if key in self:
      self._own(key)
    return dict.pop(self, key, *default)

  def popitem(self):
    self._own_all()
    return dict.popitem(self)

  def values(self):
    self._own_all()
    return dict.values(self)

  def items(self):
    self._own_all()
    return dict.items(self)

  def copy(self) -> dict:
    self._own_all()
    return dict(dict.items(self))

  def __iter__(self):
    # Defined (same behaviour) so that dict(t), {**t} and dict.update(t) go through
    # keys() and __getitem__, i.e. copies, instead of CPython's raw-value fast path.
    return dict.__iter__(self)

  def __or__(self, other):
    return self.copy() | other

  def __ror__(self, other):
    return other | self.copy()

  def __reduce__(self):                   # pickle, copy and deepcopy give a plain dict
    return dict, (self.copy(),)

  def json(self, changed_dump: dict[str, Any]) -> str:
    """sorted_json of the table's dump, given the dump of its `changed_keys` records."""
    parts = self._snapshot.parts
    return "{" + ", ".join(_json_part(k, changed_dump[k]) if k in changed_dump else parts[k]
                           for k in sorted(dict.keys(self))) + "}"

  def changed_keys(self) -> list | None:
    """Keys whose value is no longer the snapshot's record (None: a key is not a str,
    so the table's JSON must come from a whole dump)."""
    if not all(type(k) is str for k in dict.keys(self)):
      return None
    return [k for k, v in dict.items(self) if not self._snapshot.unchanged(k, v)]


def _fields(db: BaseModel) -> dict[str, Any]:
  """A model's top-level values by name: declared fields, then extras."""
  return {**{name: getattr(db, name) for name in type(db).model_fields},
          **(db.__pydantic_extra__ or {})}


def record_by_record(cls: type[BaseModel]) -> bool:
  """Whether `cls.model_dump()` is its fields' dumps and a table's dump its records' (no
  computed fields, serializers or private attributes), which copy-on-access tables and
  `dump_json` rely on."""
  decorators = cls.__pydantic_decorators__
  return not (cls.model_computed_fields or decorators.field_serializers
              or decorators.model_serializers or cls.__private_attributes__)


class DBSnapshot:
  """A DB frozen at construction (a private deep copy of it): `fresh()` gives independent
  copies, copying each record only when code reads it (whole copies, one unpickle each, for
  a DB class that is not `record_by_record`)."""

  def __init__(self, db: BaseModel):
    self.cls = type(db)
    self._whole = pickle.dumps(db, _PICKLE)        # the caller's DB may change later
    self.tables: dict[str, _TableSnapshot] = {}
    if not record_by_record(self.cls):
      return
    db = pickle.loads(self._whole)
    fields, dumped = _fields(db), db.model_dump()
    self.tables = {name: _TableSnapshot(value, dumped[name]) for name, value in fields.items()
                   if name in dumped and type(value) is dict
                   and all(type(k) is str for k in value)}
    self._rest = pickle.dumps({n: v for n, v in fields.items() if n not in self.tables},
                              _PICKLE)

  def fresh(self) -> BaseModel:
    """A DB equal to the snapshot, sharing nothing code can mutate with it (no validation:
    the snapshot's values were validated when the DB was loaded)."""
    if not self.tables:
      return pickle.loads(self._whole)
    tables = {name: CopyOnAccessTable(t) for name, t in self.tables.items()}
    return self.cls.model_construct(**tables, **pickle.loads(self._rest))


def dump_json(db: BaseModel) -> str:
  """sorted_json(db.model_dump()), dumping (with the DB's own serializer) only the fields
  that are not `CopyOnAccessTable`s and the records of those no longer the snapshot's."""
  fields = _fields(db)
  lazy = {n: v for n, v in fields.items() if isinstance(v, CopyOnAccessTable)}
  if not lazy:
    return sorted_json(db.model_dump())
  changed = {n: table.changed_keys() for n, table in lazy.items()}
  include = {n: True if changed.get(n) is None else set(changed[n])
             for n in fields if changed.get(n) != []}
  dumped = db.model_dump(include=include) if include else {}
  parts = {n: _json_part(n, v) for n, v in dumped.items() if changed.get(n) is None}
  for n, table in lazy.items():
    if changed[n] is not None:
      parts[n] = f"{json.dumps(n)}: {table.json(dumped.get(n, {}))}"
  return "{" + ", ".join(parts[n] for n in sorted(parts)) + "}"
