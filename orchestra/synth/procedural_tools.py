"""The procedural generator's tools (declarative specs) and policy for one themed domain.

Six read tools (find a person by email, get a person / resource / booking, search resources
by category, list a person's bookings), create and cancel, and -- drawn by the seed -- a
phone change and a rebooking tool; their checks are the policy's enforceable rules.
"""

from __future__ import annotations

import random
from typing import Any

from orchestra.synth.themes import ACTIVE, Names, Theme, a_or_an, stage_rng, theme_of, words


def _arg(name: str) -> dict:
  return {"arg": name}


def _const(value: Any) -> dict:
  return {"value": value}


def _field(row: str, field: str) -> dict:
  return {"row": row, "field": field}


def _param(description: str, type_: str = "string") -> dict:
  return {"type": type_, "description": description}


def _read_tools(t: Theme, n: Names, prefix: dict[str, str]) -> list[dict]:
  def ids(table, noun):
    return _param(f"The {words(noun)}'s id, such as '{prefix[table]}001'.")
  return [
      {"name": n.find_person, "kind": "read",
       "description": f"Finds {words(t.person)} accounts by email address.",
       "parameters": {"email": _param("The exact email address.")},
       "reads": [{"as": "found", "table": n.people, "where": {"email": _arg("email")}}],
       "returns": {"rows": "found"}},
      {"name": n.get_person, "kind": "read",
       "description": f"Gets {a_or_an(words(t.person))}'s details.",
       "parameters": {n.person_id: ids(n.people, t.person)},
       "reads": [{"as": "person", "table": n.people, "id": _arg(n.person_id)}],
       "returns": {"row": "person"}},
      {"name": n.get_resource, "kind": "read",
       "description": f"Gets {a_or_an(words(t.resource))}'s details, price and availability.",
       "parameters": {n.resource_id: ids(n.resources, t.resource)},
       "reads": [{"as": "resource", "table": n.resources, "id": _arg(n.resource_id)}],
       "returns": {"row": "resource"}},
      {"name": n.search, "kind": "read",
       "description": f"Lists the {words(t.resource)}s of one {t.category}.",
       "parameters": {t.category: dict(_param(f"The {t.category}."), enum=list(t.categories))},
       "reads": [{"as": "found", "table": n.resources, "where": {t.category: _arg(t.category)}}],
       "returns": {"rows": "found"}},
      {"name": n.list_bookings, "kind": "read",
       "description": f"Lists every {words(t.booking)} of {a_or_an(words(t.person))}.",
       "parameters": {n.person_id: ids(n.people, t.person)},
       "reads": [{"as": "person", "table": n.people, "id": _arg(n.person_id)},
                 {"as": "found", "table": n.bookings, "where": {n.person_id: _arg(n.person_id)}}],
       "returns": {"rows": "found"}},
      {"name": n.get_booking, "kind": "read",
       "description": f"Gets {a_or_an(words(t.booking))}'s details.",
       "parameters": {n.booking_id: ids(n.bookings, t.booking)},
       "reads": [{"as": "booking", "table": n.bookings, "id": _arg(n.booking_id)}],
       "returns": {"row": "booking"}}]


def _write_tools(t: Theme, n: Names, schema: dict, rng: random.Random) -> list[dict]:
  b = words(t.booking)
  active = {"left": _field("booking", "status"), "op": "==", "right": _const("active"),
            "error": f"Only active {b}s can be changed"}
  free = lambda row: {"left": _field(row, t.capacity), "op": ">", "right": _const(0),  # noqa: E731
                      "error": f"No {words(t.capacity)} left"}
  values = {n.person_id: _arg(n.person_id), n.resource_id: _arg(n.resource_id),
            "status": _const("active")}
  if "channel" in schema["tables"][n.bookings]["fields"]:
    values["channel"] = _const("agent")
  tools = [
      {"name": n.create, "kind": "write", "description": f"Creates {a_or_an(b)} of one unit.",
       "parameters": {n.person_id: _param(f"The {words(t.person)}'s id."),
                      n.resource_id: _param(f"The {words(t.resource)}'s id.")},
       "reads": [{"as": "person", "table": n.people, "id": _arg(n.person_id)},
                 {"as": "resource", "table": n.resources, "id": _arg(n.resource_id)}],
       "checks": [{"left": _field("person", "status"), "op": "==", "right": _const(ACTIVE),
                   "error": f"Suspended accounts cannot create {a_or_an(b)}"}, free("resource")],
       "writes": [{"op": "update", "row": "resource", "add": {t.capacity: _const(-1)}},
                  {"op": "insert", "table": n.bookings, "as": "booking", "values": values}],
       "returns": {"row": "booking"}},
      {"name": n.cancel, "kind": "write", "description": f"Cancels an active {b}.",
       "parameters": {n.booking_id: _param(f"The {b}'s id.")},
       "reads": [{"as": "booking", "table": n.bookings, "id": _arg(n.booking_id)},
                 {"as": "resource", "table": n.resources,
                  "id": _field("booking", n.resource_id)}],
       "checks": [active],
       "writes": [{"op": "update", "row": "booking", "set": {"status": _const("cancelled")}},
                  {"op": "update", "row": "resource", "add": {t.capacity: _const(1)}}],
       "returns": {"row": "booking"}}]
  if rng.random() < 0.7:
    tools.append(
        {"name": n.update_phone, "kind": "write",
         "description": f"Changes {a_or_an(words(t.person))}'s phone number.",
         "parameters": {n.person_id: _param(f"The {words(t.person)}'s id."),
                        "phone": _param("The new phone number, such as '555-0123'.")},
         "reads": [{"as": "person", "table": n.people, "id": _arg(n.person_id)}],
         "writes": [{"op": "update", "row": "person", "set": {"phone": _arg("phone")}}],
         "returns": {"row": "person"}})
  if rng.random() < 0.6:
    tools.append(
        {"name": n.change_resource, "kind": "write",
         "description": f"Moves an active {b} to another {words(t.resource)}.",
         "parameters": {n.booking_id: _param(f"The {b}'s id."),
                        n.resource_id: _param(f"The new {words(t.resource)}'s id.")},
         "reads": [{"as": "booking", "table": n.bookings, "id": _arg(n.booking_id)},
                   {"as": "old", "table": n.resources, "id": _field("booking", n.resource_id)},
                   {"as": "new", "table": n.resources, "id": _arg(n.resource_id)}],
         "checks": [active, free("new"),
                    {"left": _field("new", "id"), "op": "!=", "right": _field("old", "id"),
                     "error": f"The {b} is already for that {words(t.resource)}"}],
         "writes": [{"op": "update", "row": "old", "add": {t.capacity: _const(1)}},
                    {"op": "update", "row": "new", "add": {t.capacity: _const(-1)}},
                    {"op": "update", "row": "booking",
                     "set": {n.resource_id: _arg(n.resource_id)}}],
         "returns": {"row": "booking"}})
  return tools


def make_tools(seed: int, idea: dict, schema: dict) -> list[dict]:
  """Six read tools, create and cancel, and (drawn by the seed) phone change and rebooking."""
  t = theme_of(idea)
  n, rng = Names(t), stage_rng(seed, idea["name"], "tools")
  prefix = {table: spec["id_prefix"] for table, spec in schema["tables"].items()}
  return _read_tools(t, n, prefix) + _write_tools(t, n, schema, rng)


def make_policy(seed: int, idea: dict, tools: list[dict]) -> str:
  """policy.md: identification, what each write needs, and what is forbidden."""
  t = theme_of(idea)
  n, rng = Names(t), stage_rng(seed, idea["name"], "policy")
  names = {tool["name"] for tool in tools}
  p, b, r = (words(x) for x in (t.person, t.booking, t.resource))
  greeting = rng.choice(("You are the customer service agent of",
                         "You work at the help desk of", "You assist the customers of"))
  rules = [
      f"Identify the {p} first: look the account up by the email address they give "
      f"({n.find_person}). Never act on an account without finding it this way.",
      f"Before any change, state what you will do and the {r} concerned.",
      f"Suspended accounts cannot create {a_or_an(b)}; tell the {p} their account is suspended.",
      f"Only active {b}s can be cancelled or changed; completed and cancelled ones cannot. "
      f"Tell the {p} the {b}'s status when you refuse.",
      f"A {b} needs {a_or_an(r)} with {words(t.capacity)} above zero.",
      "Give the id of every record you create, and the price when asked for one."]
  if n.update_phone in names:
    rules.append("A phone number may be changed only by its account's owner, once identified.")
  if n.change_resource in names:
    rules.append(f"To move {a_or_an(b)}, use {n.change_resource}; do not cancel and rebook.")
  middle = rules[1:4]
  rng.shuffle(middle)
  rules[1:4] = middle
  body = "\n".join(f"- {rule}" for rule in rules)
  return (f"# {idea['name'].replace('_', ' ').title()} policy\n\n{greeting} "
          f"{idea['description'][0].lower() + idea['description'][1:]}\n\n"
          f"## Rules\n\n{body}\n\nOne tool call at a time; do not make up ids or values.\n")
