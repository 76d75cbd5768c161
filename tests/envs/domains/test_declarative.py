"""Declarative domains: a library written as schema.json + tools.json, loaded with no Python
module, its tools run by the interpreter (reads, checks, all-or-nothing writes), and every
spec or database mistake named by its path."""

import copy
import json

import jsonschema
import pytest

from orchestra.envs.domains import load_domain
from orchestra.envs.domains.replay import replay_gold
from orchestra.envs.domains.tables import SpecError

SCHEMA = {"domain": "library", "description": "A library lending books.", "tables": {
    "members": {"id_prefix": "m", "fields": {"name": {"type": "string"}}},
    "books": {"id_prefix": "b", "fields": {"title": {"type": "string"},
                                           "copies": {"type": "integer"}}},
    "loans": {"id_prefix": "ln_", "fields": {
        "member_id": {"type": "string", "ref": "members"},
        "book_id": {"type": "string", "ref": "books"},
        "status": {"type": "string", "enum": ["active", "returned"]}}}}}
DB = {"members": {"m1": {"name": "Ada"}, "m2": {"name": "Bo"}},
      "books": {"b1": {"title": "Dune", "copies": 1}, "b2": {"title": "Emma", "copies": 0}},
      "loans": {"ln_001": {"member_id": "m2", "book_id": "b1", "status": "returned"}}}
FIND = {"name": "find_book", "kind": "read", "description": "Finds books by title.",
        "parameters": {"title": {"type": "string", "description": "The exact title."}},
        "reads": [{"as": "found", "table": "books", "where": {"title": {"arg": "title"}}}],
        "returns": {"rows": "found"}}
LEND = {"name": "lend_book", "kind": "write", "description": "Lends one copy of a book.",
        "parameters": {"member_id": {"type": "string"}, "book_id": {"type": "string"}},
        "reads": [{"as": "member", "table": "members", "id": {"arg": "member_id"}},
                  {"as": "book", "table": "books", "id": {"arg": "book_id"}}],
        "checks": [{"left": {"row": "book", "field": "copies"}, "op": ">",
                    "right": {"value": 0}, "error": "No copy left"}],
        "writes": [{"op": "update", "row": "book", "add": {"copies": {"value": -1}}},
                   {"op": "insert", "table": "loans", "as": "loan", "values": {
                       "member_id": {"arg": "member_id"}, "book_id": {"arg": "book_id"},
                       "status": {"value": "active"}}}],
        "returns": {"row": "loan"}}
REMOVE = {"name": "remove_member", "kind": "write", "description": "Deletes a member.",
          "parameters": {"member_id": {"type": "string"}},
          "reads": [{"as": "member", "table": "members", "id": {"arg": "member_id"}}],
          "writes": [{"op": "delete", "row": "member"}]}
TASK = {"id": "t0", "user_scenario": {"instructions": "Borrow Dune; you are m1."},
        "evaluation_criteria": {"actions": [
            {"action_id": "a0", "name": "find_book", "arguments": {"title": "Dune"}},
            {"action_id": "a1", "name": "lend_book",
             "arguments": {"member_id": "m1", "book_id": "b1"}}]}}


def write_folder(path, schema=SCHEMA, tools=(FIND, LEND, REMOVE), db=DB):
  path.mkdir(parents=True, exist_ok=True)
  for name, obj in (("schema.json", schema), ("tools.json", list(tools)), ("db.json", db),
                    ("tasks.json", [TASK]), ("split_tasks.json", {"train": ["t0"]})):
    (path / name).write_text(json.dumps(obj))
  (path / "policy.md").write_text("Lend books to members.")
  return path


def test_a_folder_loads_without_python_and_its_tools_run(tmp_path):
  folder = write_folder(tmp_path / "library")
  domain = load_domain(str(folder), str(folder))
  assert domain.name == "library" and domain.toolkit_cls.tool_names() == [
      "find_book", "lend_book", "remove_member"]
  for schema in domain.tool_schemas():
    jsonschema.Draft202012Validator.check_schema(schema["function"]["parameters"])
  assert domain.tool_schemas()[0]["function"]["parameters"]["required"] == ["title"]
  env = domain.new_env()
  assert json.loads(env.execute("find_book", {"title": "Dune"}).text) == [
      {"id": "b1", "title": "Dune", "copies": "1"}]          # tau2's nested-number quirk
  out = env.execute("lend_book", {"member_id": "m1", "book_id": "b1"})
  assert not out.error and json.loads(out.text)["id"] == "ln_002"
  assert env.db.dump()["books"]["b1"]["copies"] == 0
  assert env.db.dump()["loans"]["ln_002"] == {"member_id": "m1", "book_id": "b1",
                                              "status": "active"}
  assert env.mutates_state("lend_book") and not env.mutates_state("find_book")
  gold = replay_gold(domain, domain.task("t0"))
  assert gold["final_db_hash"] != gold["initial_db_hash"]
  assert gold["final_db_hash"] == env.db_hash()


def test_data_dir_domains_name_finds_the_folder(tmp_path):
  write_folder(tmp_path / "domains" / "library")
  assert load_domain("library", str(tmp_path)).name == "library"


@pytest.mark.parametrize("tool, arguments, error", [
    ("lend_book", {"member_id": "m1", "book_id": "b2"}, "Error: No copy left"),
    ("lend_book", {"member_id": "m9", "book_id": "b1"}, "Error: members m9 not found"),
    ("lend_book", {"member_id": "m1"}, "missing ['book_id']"),
    ("lend_book", {"member_id": "m1", "book_id": 3}, "argument book_id must be string"),
    ("find_book", {"title": "Dune", "year": 1965}, "unexpected ['year']"),
    ("remove_member", {"member_id": "m2"}, "still referred to by loans.member_id"),
    ("burn_book", {}, "Error: Tool 'burn_book' not found."),
])
def test_a_failed_call_is_an_error_observation_and_changes_nothing(tmp_path, tool, arguments,
                                                                   error):
  domain = load_domain(str(write_folder(tmp_path / "lib")), "")
  env = domain.new_env()
  before = env.db_hash()
  out = env.execute(tool, arguments)
  assert out.error and error in out.text
  assert env.db_hash() == before


def test_writes_are_all_or_nothing(tmp_path):
  """The insert names a missing member after the copy count was already lowered: the
  call fails with the reference error and the count is restored."""
  lend = copy.deepcopy(LEND)
  lend["reads"] = lend["reads"][1:]                       # no member lookup before writing
  domain = load_domain(str(write_folder(tmp_path / "lib", tools=(FIND, lend))), "")
  env = domain.new_env()
  before = env.db_hash()
  out = env.execute("lend_book", {"member_id": "m9", "book_id": "b1"})
  assert out.error and "refers to no members row 'm9'" in out.text
  assert env.db_hash() == before and env.db.dump()["books"]["b1"]["copies"] == 1


def _broken(tool_edit=None, schema_edit=None, db_edit=None):
  tools, schema, db = copy.deepcopy([FIND, LEND]), copy.deepcopy(SCHEMA), copy.deepcopy(DB)
  for edit, obj in ((tool_edit, tools), (schema_edit, schema), (db_edit, db)):
    if edit:
      edit(obj)
  return tools, schema, db


@pytest.mark.parametrize("parts, message", [
    (_broken(tool_edit=lambda t: t[1]["writes"][0]["add"].update(pages={"value": 1})),
     r"tools\[1\] \(lend_book\).writes\[0\].add.pages: table books has no field 'pages'"),
    (_broken(tool_edit=lambda t: t[1]["writes"][0].update(row="volume")),
     r"writes\[0\].row: no row bound as 'volume'"),
    (_broken(tool_edit=lambda t: t[0].update(writes=[{"op": "delete", "row": "found"}])),
     r"tools\[0\] \(find_book\).writes: a read tool must not write"),
    (_broken(tool_edit=lambda t: t[1]["writes"][1]["values"].pop("status")),
     r"an insert gives every field; missing \['status'\]"),
    (_broken(tool_edit=lambda t: t[1]["checks"][0].update(right={"arg": "count"})),
     r"checks\[0\].right: no parameter 'count'"),
    (_broken(tool_edit=lambda t: t[1]["writes"][1]["values"].update(status={"value": "lost"})),
     r"values.status: the constant must be one of \['active', 'returned'\]"),
    (_broken(schema_edit=lambda s: s["tables"]["loans"]["fields"]["book_id"].update(ref="bks")),
     r"fields.book_id.ref: no table 'bks'"),
    (_broken(db_edit=lambda d: d["loans"]["ln_001"].update(book_id="b7")),
     r"db.loans: row ln_001: field book_id refers to no books row 'b7'"),
    (_broken(db_edit=lambda d: d["books"]["b1"].update(copies="one")),
     r"db.books: row b1: field copies must be integer"),
    (_broken(db_edit=lambda d: d["members"].update(x1={"name": "Cy"})),
     r"db.members: id 'x1' must be a string starting with 'm'"),
])
def test_a_bad_spec_or_database_names_what_is_wrong(tmp_path, parts, message):
  tools, schema, db = parts
  folder = write_folder(tmp_path / "lib", schema=schema, tools=tools, db=db)
  with pytest.raises(SpecError, match=message):
    load_domain(str(folder), "")
