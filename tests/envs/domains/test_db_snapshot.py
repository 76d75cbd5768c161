"""DBSnapshot: copy-on-access DB copies never share mutable records with the snapshot, and
their hash (assembled from cached pieces) equals tau2's definition in every state."""

import copy
import pickle
from typing import Dict, List, Optional

import pytest
from pydantic import BaseModel, PrivateAttr, computed_field, field_serializer

from orchestra.envs.domains import DB, dict_hash
from orchestra.envs.domains.db_snapshot import (CopyOnAccessTable, DBSnapshot, dump_json,
                                                record_by_record)
from orchestra.envs.domains.replay import _gold_run
from orchestra.envs.domains.tables import TablesDB


class Item(BaseModel):
  name: str
  price: float
  tags: List[str]
  note: Optional[str] = None


class ShopDB(DB):
  items: Dict[str, Item]
  owner: str
  counts: Dict[int, int]            # non-str keys: stays a plain dict
  bundles: Dict[str, List[Item]]    # records that are not models themselves


def shop() -> ShopDB:
  return ShopDB(items={f"i{k}": Item(name=f"item é{k}", price=k / 3, tags=[str(k)])
                       for k in range(6)}, owner="ada", counts={2: 1, 1: 2},
                bundles={"b": [Item(name="x", price=0.5, tags=[])], "c": []})


def plain_hash(db) -> str:
  return dict_hash(db.dump())


@pytest.mark.parametrize("mutate", [
    lambda db: setattr(db.items["i1"], "price", 9.5),
    lambda db: db.items.get("i2").tags.append("x"),
    lambda db: [item.tags.clear() for item in db.items.values()],
    lambda db: [setattr(item, "note", k) for k, item in db.items.items()],
    lambda db: db.items.pop("i3").tags.append("gone"),
    lambda db: db.items.setdefault("i4", None).tags.append("y"),
    lambda db: db.items.popitem()[1].tags.append("z"),
    lambda db: dict(db.items)["i0"].tags.append("via dict()"),
    lambda db: {**db.items}["i0"].tags.append("via {**}"),
    lambda db: db.items.copy()["i5"].tags.append("via copy"),
    lambda db: (db.items | {})["i5"].tags.append("via |"),
    lambda db: copy.copy(db.items)["i5"].tags.append("via copy.copy"),
    lambda db: db.items.__setitem__("new", Item(name="n", price=1.0, tags=[])),
    lambda db: db.items.__delitem__("i0"),
    lambda db: db.items.__setitem__("i0", db.items["i1"]),
    lambda db: db.counts.__setitem__(3, 3),
    lambda db: setattr(db, "owner", "bob"),
    lambda db: db.bundles["b"][0].tags.append("in a list"),
    lambda db: db.bundles["c"].append(Item(name="y", price=2.0, tags=["t"])),
])
def test_changes_reach_the_hash_and_never_the_snapshot(mutate):
  snapshot = DBSnapshot(shop())
  before = plain_hash(shop())
  db = snapshot.fresh()
  assert isinstance(db.items, CopyOnAccessTable) and db.db_hash() == before
  mutate(db)
  assert db.db_hash() == plain_hash(db) != before           # tau2's definition, fast path
  again = snapshot.fresh()
  assert again.db_hash() == plain_hash(again) == before     # the snapshot is untouched
  assert again.dump() == shop().dump()


def test_the_snapshot_is_a_copy_of_the_db_it_was_given():
  db = shop()
  snapshot = DBSnapshot(db)
  db.items["i0"].tags.append("later")
  assert snapshot.fresh().dump() == shop().dump()


class CountedDB(DB):                  # a computed field: not in any one record's dump
  items: Dict[str, Item]

  @computed_field
  @property
  def count(self) -> int:
    return len(self.items)


class TaggedDB(DB):                   # a table serializer that looks at the whole table
  items: Dict[str, Item]

  @field_serializer("items", mode="wrap")
  def _with_size(self, items, handler):
    return {k: {**v, "of": len(items)} for k, v in handler(items).items()}


class NotedDB(DB):                    # private state a field-by-field copy would drop
  items: Dict[str, Item]
  _note: str = PrivateAttr(default="")


class NamesDB(DB):                    # its own dump defines its hash
  items: Dict[str, Item]

  def dump(self) -> dict:
    return {"names": sorted(i.name for i in self.items.values())}


@pytest.mark.parametrize("cls", [CountedDB, TaggedDB, NotedDB, NamesDB])
def test_dbs_not_dumped_record_by_record_get_whole_copies(cls):
  db = cls(items={"a": Item(name="a", price=1.0, tags=[])})
  if cls is NotedDB:
    db._note = "loaded"
  assert record_by_record(cls) == (cls is NamesDB)
  snapshot = DBSnapshot(db)
  fresh = snapshot.fresh()
  assert fresh == db and fresh.db_hash() == plain_hash(db)
  fresh.items["b"] = Item(name="b", price=2.0, tags=[])
  assert fresh.db_hash() == plain_hash(fresh) != plain_hash(db)
  assert snapshot.fresh() == db


def test_reading_without_changing_keeps_the_hash_and_copies_once():
  snapshot = DBSnapshot(shop())
  db = snapshot.fresh()
  first = db.items["i1"]
  assert db.items["i1"] is first                            # one private copy per record
  assert first is not snapshot.tables["items"].records["i1"]
  assert [i.name for i in db.items.values()] == [f"item é{k}" for k in range(6)]
  assert db.db_hash() == plain_hash(shop())


def test_pickle_and_deepcopy_of_a_table_are_plain_independent_dicts():
  snapshot = DBSnapshot(shop())
  db = snapshot.fresh()
  for clone in (pickle.loads(pickle.dumps(db.items)), copy.deepcopy(db.items)):
    assert type(clone) is dict and clone == db.items
    clone["i0"].tags.append("clone")
  assert db.db_hash() == snapshot.fresh().db_hash()
  whole = pickle.loads(pickle.dumps(db))                    # a DB holding the tables
  assert type(whole.items) is dict and whole.db_hash() == db.db_hash()


def test_extra_field_tables_of_a_tables_db():
  db = TablesDB.model_validate({"books": {"b1": {"title": "Dune", "copies": 2}},
                                "loans": {}})
  snapshot = DBSnapshot(db)
  fresh = snapshot.fresh()
  assert isinstance(fresh.table("books"), CopyOnAccessTable)
  assert dump_json(fresh) == dump_json(db) and fresh.db_hash() == plain_hash(db)
  fresh.table("books")["b1"]["copies"] -= 1
  fresh.table("loans")["l1"] = {"book": "b1"}
  assert fresh.db_hash() == plain_hash(fresh) != plain_hash(db)
  assert snapshot.fresh().db_hash() == plain_hash(db)


@pytest.mark.parametrize("name", ["retail", "airline"])
def test_every_gold_run_hashes_by_the_definition_and_leaves_the_snapshot(domains, tau2_data,
                                                                        name):
  """After each task's gold actions the fast hash equals tau2's hash of the env's dump, and
  after all of them a fresh DB still equals db.json as loaded (no write leaked into the
  snapshot, so every task started from the shipped DB)."""
  d = domains[name]
  for task in d.tasks:
    env, *_ = _gold_run(d, task)
    assert env.db_hash() == plain_hash(env.db), task.id
  loaded = type(d.fresh_db()).load(tau2_data / "domains" / name / "db.json")
  assert d.fresh_db().dump() == loaded.dump()
