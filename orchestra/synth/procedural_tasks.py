"""The procedural generator's task templates: scenarios drawn from one domain's database.

Look up a booking's price, book, cancel, rebook, change a phone number, and two policy
refusals (cancelling a booking that is not active, booking while suspended). Each template
returns a task draft (drafts.py) or None when the database offers it no case.
"""

from __future__ import annotations

import random
from typing import Callable

from orchestra.synth.themes import (ACTIVE, SUSPENDED, Names, Theme, a_or_an, stage_rng, theme_of,
                                   words)


PERSONAS = ("Polite and brief.", "In a hurry; answers only what is asked.",
            "Chatty, but sticks to the request.", "Careful; double-checks what the agent says.",
            None)


class _World:
  """One domain's database and tools, as the task templates see them."""

  def __init__(self, theme: Theme, schema: dict, db: dict, tools: list[dict],
               rng: random.Random):
    self.t, self.n, self.db, self.rng = theme, Names(theme), db, rng
    self.tools = {tool["name"] for tool in tools}
    self.schema = schema

  def pick(self, table: str, keep: Callable[[dict], bool]) -> str | None:
    ids = [i for i, row in self.db[table].items() if keep(row)]
    return self.rng.choice(ids) if ids else None

  def identify(self, person_id: str) -> list[dict]:
    return [{"name": self.n.find_person,
             "arguments": {"email": self.db[self.n.people][person_id]["email"]}}]

  def list_bookings(self, person_id: str) -> dict:
    """The gold call listing a person's bookings."""
    return {"name": self.n.list_bookings, "arguments": {self.n.person_id: person_id}}

  def search(self, resource: dict) -> dict:
    """The gold call searching resources of `resource`'s category."""
    return {"name": self.n.search, "arguments": {self.t.category: resource[self.t.category]}}

  def next_booking_id(self) -> str:
    prefix = self.schema["tables"][self.n.bookings]["id_prefix"]
    return f"{prefix}{len(self.db[self.n.bookings]) + 1:03d}"

  def draft(self, kind: str, template: str, person_id: str, reason: str, actions: list,
            info: list[str], instructions: str = "") -> dict:
    person = self.db[self.n.people][person_id]
    return {"kind": kind, "template": template, "persona": self.rng.choice(PERSONAS),
            "reason_for_call": reason,
            "known_info": f"You are {person['name']}; your email is {person['email']}.",
            "unknown_info": "You do not know any ids.",
            "task_instructions": (instructions + " If asked to confirm, say yes.").strip(),
            "actions": actions, "communicate_info": info}


def _booking_parts(w: _World, booking_id: str) -> tuple[str, dict, str, dict]:
  booking = w.db[w.n.bookings][booking_id]
  person_id, resource_id = booking[w.n.person_id], booking[w.n.resource_id]
  return person_id, booking, resource_id, w.db[w.n.resources][resource_id]


def _lookup_price(w: _World) -> dict | None:
  bid = w.pick(w.n.bookings, lambda row: True)
  pid, _, rid, resource = _booking_parts(w, bid)
  return w.draft("read", "lookup_price", pid,
                 f"You want the {words(w.t.price)} of your {words(w.t.booking)}"
                 f" for {resource['name']}.",
                 w.identify(pid) + [
                     w.list_bookings(pid),
                     {"name": w.n.get_resource, "arguments": {w.n.resource_id: rid}}],
                 [str(resource[w.t.price])])


def _book(w: _World) -> dict | None:
  pid = w.pick(w.n.people, lambda row: row["status"] == ACTIVE)
  rid = w.pick(w.n.resources, lambda row: row[w.t.capacity] > 0)
  if pid is None or rid is None:
    return None
  resource = w.db[w.n.resources][rid]
  return w.draft("write", "book", pid,
                 f"You want {a_or_an(words(w.t.booking))} for {resource['name']} "
                 f"({words(w.t.category)}: {resource[w.t.category]}).",
                 w.identify(pid) + [
                     w.search(resource),
                     {"name": w.n.create, "arguments": {w.n.person_id: pid, w.n.resource_id: rid}}],
                 [w.next_booking_id()], "Ask for the new record's id.")


def _cancel(w: _World) -> dict | None:
  bid = w.pick(w.n.bookings, lambda row: row["status"] == "active")
  if bid is None:
    return None
  pid, _, _, resource = _booking_parts(w, bid)
  return w.draft("write", "cancel", pid,
                 f"You want to cancel your {words(w.t.booking)} for {resource['name']}.",
                 w.identify(pid) + [w.list_bookings(pid),
                                    {"name": w.n.cancel, "arguments": {w.n.booking_id: bid}}], [])


def _change_phone(w: _World) -> dict | None:
  if w.n.update_phone not in w.tools:
    return None
  pid = w.pick(w.n.people, lambda row: True)
  phone = f"555-{w.rng.randint(2000, 9999)}"
  return w.draft("write", "change_phone", pid, f"You want your phone number changed to {phone}.",
                 w.identify(pid) + [{"name": w.n.update_phone,
                                     "arguments": {w.n.person_id: pid, "phone": phone}}], [])


def _rebook(w: _World) -> dict | None:
  bid = w.pick(w.n.bookings, lambda row: row["status"] == "active")
  if w.n.change_resource not in w.tools or bid is None:
    return None
  pid, _, old_id, old = _booking_parts(w, bid)
  new_id = w.pick(w.n.resources, lambda row: row[w.t.capacity] > 0 and row is not old)
  if new_id is None:
    return None
  new = w.db[w.n.resources][new_id]
  return w.draft("write", "rebook", pid,
                 f"You want to move your {words(w.t.booking)} from {old['name']} to "
                 f"{new['name']} ({words(w.t.category)}: {new[w.t.category]}).",
                 w.identify(pid) + [
                     w.list_bookings(pid),
                     w.search(new),
                     {"name": w.n.change_resource,
                      "arguments": {w.n.booking_id: bid, w.n.resource_id: new_id}}], [])


def _refuse_cancel(w: _World) -> dict | None:
  bid = w.pick(w.n.bookings, lambda row: row["status"] != "active")
  if bid is None:
    return None
  pid, booking, _, resource = _booking_parts(w, bid)
  return w.draft("read", "refuse_cancel", pid,
                 f"You want to cancel your {words(w.t.booking)} for {resource['name']}.",
                 w.identify(pid) + [w.list_bookings(pid)],
                 [booking["status"]], "If it cannot be cancelled, accept that.")


def _refuse_suspended(w: _World) -> dict | None:
  pid = w.pick(w.n.people, lambda row: row["status"] == SUSPENDED)
  rid = w.pick(w.n.resources, lambda row: row[w.t.capacity] > 0)
  if pid is None or rid is None:
    return None
  return w.draft("read", "refuse_suspended", pid,
                 f"You want {a_or_an(words(w.t.booking))} for "
                 f"{w.db[w.n.resources][rid]['name']}.",
                 w.identify(pid), [SUSPENDED], "If you are refused, ask why, then stop.")


TEMPLATES = (_lookup_price, _book, _cancel, _change_phone, _rebook, _refuse_cancel,
             _refuse_suspended)


def make_tasks(seed: int, idea: dict, schema: dict, db: dict, tools: list[dict],
               n: int) -> list[dict]:
  """`n` task drafts from the templates (a template that does not apply is redrawn)."""
  world = _World(theme_of(idea), schema, db, tools, stage_rng(seed, idea["name"], "tasks"))
  drafts = []
  for _ in range(50 * n):
    if len(drafts) == n:
      break
    draft = world.rng.choice(TEMPLATES)(world)
    if draft is not None:
      drafts.append(draft)
  return drafts
