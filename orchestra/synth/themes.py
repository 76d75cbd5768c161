"""The procedural generator's catalogue: service domains as nouns, categories and names.

Every theme is one kind of business where a person books a limited resource: the
procedural generator (procedural.py) turns a theme and a seed into a schema, a database,
tools, a policy and tasks. Adding a theme here adds a domain the generator can make.
"""

from __future__ import annotations

import dataclasses
import random

from orchestra.synth.drafts import SynthDrop


@dataclasses.dataclass(frozen=True)
class Theme:
  """One business: who books (`person`), what (`resource`), and the booking's name."""

  domain: str
  description: str
  person: str
  resource: str
  booking: str
  category: str                 # the resource field users search by
  categories: tuple[str, ...]
  capacity: str                 # the resource's free units
  price: str                    # the resource's price field
  tier: str                     # the person's membership-like field
  tiers: tuple[str, ...]
  items: tuple[str, ...]        # resource names


THEMES: tuple[Theme, ...] = (
    Theme("clinic_scheduling", "A clinic booking patients into doctors' appointment slots.",
          "patient", "doctor", "appointment", "specialty",
          ("cardiology", "dermatology", "pediatrics", "orthopedics"), "open_slots", "visit_fee",
          "insurance_plan", ("basic", "standard", "premium"),
          ("Dr Alvarez", "Dr Brennan", "Dr Chowdhury", "Dr Dubois", "Dr Eriksen", "Dr Fontaine",
           "Dr Gallo", "Dr Haddad", "Dr Ito", "Dr Jansen", "Dr Kowalski", "Dr Lindqvist")),
    Theme("library_loans", "A public library lending books to its members.",
          "member", "book", "loan", "genre", ("fiction", "history", "science", "poetry"),
          "copies_available", "late_fee", "membership", ("junior", "adult", "senior"),
          ("Dune", "Emma", "Ulysses", "Walden", "Beloved", "Middlemarch", "Persuasion",
           "The Odyssey", "Cosmos", "Leaves of Grass", "The Histories", "Silent Spring")),
    Theme("freight_shipping", "A freight company booking shippers' cargo onto vessels.",
          "shipper", "vessel", "shipment", "route", ("atlantic", "pacific", "baltic", "coastal"),
          "free_containers", "rate_per_container", "account_tier", ("spot", "contract", "key"),
          ("Aurora", "Borealis", "Cygnus", "Draco", "Electra", "Fortuna", "Gemini", "Helios",
           "Icarus", "Juno", "Kestrel", "Lyra")),
    Theme("bank_disputes", "A bank handling card holders' disputes of merchant charges.",
          "card_holder", "merchant_charge", "dispute", "merchant_type",
          ("travel", "grocery", "electronics", "subscription"), "disputable_units", "amount",
          "card_level", ("classic", "gold", "platinum"),
          ("Skyway Air", "FreshMart", "Voltix Store", "StreamBox", "CityRail", "GreenGrocer",
           "ByteHub", "NewsPlus", "Harbor Hotels", "QuickCab", "PixelPlay", "MealKit Co")),
    Theme("hotel_reservations", "A hotel group reserving rooms for guests.",
          "guest", "room_type", "reservation", "view", ("sea", "garden", "city", "mountain"),
          "rooms_free", "nightly_rate", "loyalty_level", ("blue", "silver", "gold"),
          ("Harbor Suite", "Garden Double", "City Single", "Alpine Loft", "Sea Twin",
           "Courtyard King", "Skyline Studio", "Pine Cabin", "Lagoon Villa", "Terrace Queen",
           "Summit Family", "Orchard Room")),
    Theme("car_rental", "A car rental agency renting vehicles to drivers.",
          "driver", "vehicle_model", "rental", "vehicle_class",
          ("compact", "suv", "van", "electric"),
          "units_available", "daily_rate", "driver_tier", ("new", "regular", "elite"),
          ("Corolla", "Civic", "RAV4", "Model 3", "Transit", "Golf", "Leaf", "Outback", "Sprinter",
           "Kona", "Ioniq", "Tiguan")),
    Theme("gym_classes", "A fitness club enrolling members into classes.",
          "athlete", "fitness_class", "enrollment", "discipline",
          ("yoga", "spin", "boxing", "pilates"), "spots_left", "drop_in_price", "plan",
          ("offpeak", "full", "family"),
          ("Sunrise Flow", "Power Spin", "Box Fit", "Core Pilates", "Night Ride", "Calm Yoga",
           "Bag Work", "Reformer Basics", "Hill Climb", "Vinyasa Plus", "Sparring Lab",
           "Mat Core")),
    Theme("course_enrollment", "A college registering students for courses.",
          "student", "course", "registration", "department",
          ("math", "biology", "economics", "literature"), "seats_open", "credit_fee", "standing",
          ("freshman", "sophomore", "senior"),
          ("Linear Algebra", "Cell Biology", "Microeconomics", "Modern Poetry", "Calculus II",
           "Genetics", "Game Theory", "The Novel", "Statistics", "Ecology", "Econometrics",
           "Drama")),
    Theme("event_ticketing", "A box office selling event tickets to attendees.",
          "attendee", "event", "ticket_order", "venue", ("arena", "theatre", "club", "park"),
          "tickets_left", "ticket_price", "fan_level", ("casual", "member", "vip"),
          ("Spring Gala", "Jazz Night", "Indie Fest", "Symphony No 9", "Comedy Hour",
           "Rock Revival", "Opera Tosca", "Folk Evening", "Dance Marathon", "Film Premiere",
           "Poetry Slam", "Summer Beats")),
    Theme("equipment_rental", "A hardware store renting tools and machines.",
          "renter", "equipment", "rental_order", "equipment_type",
          ("power_tool", "garden", "lifting", "cleaning"), "units_in_stock", "day_price",
          "account_type", ("personal", "trade", "business"),
          ("Rotary Hammer", "Leaf Blower", "Scissor Lift", "Pressure Washer", "Tile Cutter",
           "Hedge Trimmer", "Engine Hoist", "Carpet Cleaner", "Plate Compactor", "Chainsaw",
           "Pallet Jack", "Floor Sander")),
    Theme("restaurant_reservations", "A restaurant group booking tables for diners.",
          "diner", "dining_slot", "table_booking", "seating",
          ("indoor", "terrace", "bar", "private"),
          "tables_free", "deposit", "guest_status", ("walk_in", "regular", "patron"),
          ("Friday Lunch", "Friday Dinner", "Saturday Brunch", "Saturday Dinner", "Sunday Roast",
           "Chef Table", "Tasting Menu", "Wine Night", "Early Bird", "Late Supper",
           "Garden Tea", "Holiday Feast")),
    Theme("pet_grooming", "A pet salon booking owners' pets into grooming sessions.",
          "pet_owner", "grooming_session", "grooming_booking", "service",
          ("bath", "haircut", "nails", "spa"), "slots_open", "session_price", "client_level",
          ("first_visit", "returning", "club"),
          ("Morning Bath", "Puppy Trim", "Nail Clinic", "Deluxe Spa", "Evening Bath",
           "Breed Cut", "Paw Care", "Full Groom", "Quick Wash", "Teeth Clean", "Cat Groom",
           "Show Prep")),
)

FIRST_NAMES = ("Ada", "Bruno", "Chen", "Dalia", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun",
               "Kemal", "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sami",
               "Tomas", "Uma", "Viktor", "Wen", "Yara", "Zane")
LAST_NAMES = ("Abe", "Berg", "Costa", "Diaz", "Evans", "Fischer", "Garcia", "Hoang", "Ibsen",
              "Jovanovic", "Khan", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quispe",
              "Rossi", "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Yilmaz", "Zhou")

ACTIVE, SUSPENDED = "active", "suspended"
BOOKING_STATES = ("active", "completed", "cancelled")

def stage_rng(seed: int, domain: str, stage: str) -> random.Random:
  """The random draws of one stage of one domain: reproducible, independent of the others."""
  return random.Random(f"{seed}/{domain}/{stage}")

def words(name: str) -> str:
  """A snake_case name as words: "ticket_order" -> "ticket order"."""
  return name.replace("_", " ")


def a_or_an(noun: str) -> str:
  return ("an " if noun[:1] in "aeiou" else "a ") + noun


class Names:
  """A theme's table, field and tool names, shared by every stage."""

  def __init__(self, theme: Theme):
    t = self.theme = theme
    p, r, b = t.person, t.resource, t.booking
    self.people, self.resources, self.bookings = p + "s", r + "s", b + "s"
    self.person_id, self.resource_id, self.booking_id = p + "_id", r + "_id", b + "_id"
    self.find_person, self.get_person = f"find_{p}_by_email", f"get_{p}_details"
    self.get_resource, self.search = f"get_{r}_details", f"search_{r}s_by_{t.category}"
    self.list_bookings, self.get_booking = f"list_{p}_{b}s", f"get_{b}_details"
    self.create, self.cancel = f"create_{b}", f"cancel_{b}"
    self.update_phone, self.change_resource = f"update_{p}_phone", f"change_{b}_{r}"


def theme_of(idea: dict) -> Theme:
  by_name = {t.domain: t for t in THEMES}
  if idea.get("theme") not in by_name:
    raise SynthDrop("unknown_theme", f"no procedural theme {idea.get('theme')!r}")
  return by_name[idea["theme"]]


def id_prefixes(n: Names) -> dict[str, str]:
  out: dict[str, str] = {}
  for table in (n.people, n.resources, n.bookings):
    prefix = table[:3] + "_"
    while prefix in out.values():
      prefix = prefix[:-1] + str(len(out)) + "_"
    out[table] = prefix
  return out
