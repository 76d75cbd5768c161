"""The offline generator: seeded templates compose domains, tools and tasks with no model.

Each domain is a theme (themes.py) -- a person books a limited resource -- made concrete
by a seed: which optional fields and tools exist, the rows of the database, the policy's
wording and the tasks. Every random draw comes from `random.Random("<seed>/<domain>/<stage>")`,
so the same seed gives the same bytes and a stage can be rerun alone.

Tasks come from templates over the database (look up a booking's price, book, cancel,
rebook, change a phone number, and policy refusals: cancelling a completed booking,
booking while suspended); each is a task draft (see drafts.py) that verification then
executes. Templates can repeat a scenario; verification drops the duplicates.
"""

from __future__ import annotations

import random

from orchestra.synth.procedural_tasks import make_tasks
from orchestra.synth.procedural_tools import make_policy, make_tools
from orchestra.synth.themes import (ACTIVE, BOOKING_STATES, FIRST_NAMES, LAST_NAMES, SUSPENDED,
                                   THEMES, Names, id_prefixes, stage_rng, theme_of)

__all__ = ["ProceduralGenerator", "make_database", "make_policy", "make_schema", "make_tasks",
           "make_tools"]


def make_schema(seed: int, idea: dict) -> dict:
  """Three tables (people, resources, bookings); optional fields drawn by the seed."""
  t = theme_of(idea)
  n, rng = Names(t), stage_rng(seed, idea["name"], "schema")
  people = {"name": {"type": "string"}, "email": {"type": "string"},
            "phone": {"type": "string"}, t.tier: {"type": "string", "enum": list(t.tiers)},
            "status": {"type": "string", "enum": [ACTIVE, SUSPENDED]}}
  resources = {"name": {"type": "string"},
               t.category: {"type": "string", "enum": list(t.categories)},
               t.capacity: {"type": "integer"}, t.price: {"type": "number"}}
  bookings = {n.person_id: {"type": "string", "ref": n.people},
              n.resource_id: {"type": "string", "ref": n.resources},
              "status": {"type": "string", "enum": list(BOOKING_STATES)}}
  if rng.random() < 0.5:
    people["city"] = {"type": "string"}
  if rng.random() < 0.5:
    resources["rating"] = {"type": "number"}
  if rng.random() < 0.5:
    bookings["channel"] = {"type": "string", "enum": ["web", "phone", "agent"]}
  prefix = id_prefixes(n)
  return {"domain": idea["name"], "description": idea["description"], "tables": {
      n.people: {"id_prefix": prefix[n.people], "fields": people},
      n.resources: {"id_prefix": prefix[n.resources], "fields": resources},
      n.bookings: {"id_prefix": prefix[n.bookings], "fields": bookings}}}


def make_database(seed: int, idea: dict, schema: dict) -> dict:
  """Seeded rows: 8-14 people (some suspended), 6-10 resources, 10-20 bookings."""
  t = theme_of(idea)
  n, rng = Names(t), stage_rng(seed, idea["name"], "database")
  tables = schema["tables"]
  row_id = lambda table, i: f"{tables[table]['id_prefix']}{i + 1:03d}"  # noqa: E731
  full_names = rng.sample([(f, l) for f in FIRST_NAMES for l in LAST_NAMES], rng.randint(8, 14))
  people = {}
  for i, (first, last) in enumerate(full_names):
    row = {"name": f"{first} {last}", "email": f"{first}.{last}{i}@example.com".lower(),
           "phone": f"555-{1000 + 37 * i + rng.randint(0, 30):04d}",
           t.tier: rng.choice(t.tiers), "status": SUSPENDED if i % 5 == 3 else ACTIVE}
    if "city" in tables[n.people]["fields"]:
      row["city"] = rng.choice(("Lisbon", "Oslo", "Kyoto", "Quito", "Accra", "Perth"))
    people[row_id(n.people, i)] = row
  resources = {}
  for i, name in enumerate(rng.sample(t.items, rng.randint(6, 10))):
    row = {"name": name, t.category: t.categories[i % len(t.categories)],
           t.capacity: 0 if i % 4 == 2 else rng.randint(1, 6),
           t.price: round(rng.uniform(10, 300), 1)}
    if "rating" in tables[n.resources]["fields"]:
      row["rating"] = round(rng.uniform(3, 5), 1)
    resources[row_id(n.resources, i)] = row
  bookings = {}
  for i in range(rng.randint(10, 20)):
    row = {n.person_id: rng.choice(list(people)), n.resource_id: rng.choice(list(resources)),
           "status": rng.choices(BOOKING_STATES, weights=(6, 3, 1))[0]}
    if "channel" in tables[n.bookings]["fields"]:
      row["channel"] = rng.choice(("web", "phone"))
    bookings[row_id(n.bookings, i)] = row
  return {n.people: people, n.resources: resources, n.bookings: bookings}

class ProceduralGenerator:
  """The `Generator` of the offline default (see pipeline.py): no model, same seed same
  bytes, nothing spent (the `spend` arguments stay zero)."""

  def __init__(self, seed: int):
    self.seed = seed

  async def domain_ideas(self, n: int, spend) -> list[dict]:
    """`n` domains: the themes in a seeded order, then numbered variants of them."""
    order = list(THEMES)
    random.Random(f"{self.seed}/domains").shuffle(order)
    return [{"name": t.domain if i < len(order) else f"{t.domain}_{i // len(order) + 1}",
             "description": t.description, "theme": t.domain}
            for i, t in ((i, order[i % len(order)]) for i in range(n))]

  async def schema(self, idea: dict, spend) -> dict:
    return make_schema(self.seed, idea)

  async def database(self, idea: dict, schema: dict, spend) -> dict:
    return make_database(self.seed, idea, schema)

  async def tools(self, idea: dict, schema: dict, spend) -> list[dict]:
    return make_tools(self.seed, idea, schema)

  async def policy(self, idea: dict, schema: dict, tools: list[dict], spend) -> str:
    del schema
    return make_policy(self.seed, idea, tools)

  async def tasks(self, idea: dict, schema: dict, db: dict, tools: list[dict], policy: str,
                  n: int, spend) -> list[dict]:
    del policy
    return make_tasks(self.seed, idea, schema, db, tools, n)
