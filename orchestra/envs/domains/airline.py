"""The tau2 airline domain: the `FlightDB` data model and the 14 airline tools.

Behaviour follows tau2-bench's `domains/airline/{data_model,tools}.py` (MIT): field
declaration order (it fixes the key order of tool outputs), field types (it fixes the
hash: gift-card/certificate amounts are floats, prices and payments ints), tool order,
docstrings (they are the tool schemas), error messages, and the order of arithmetic.

Upstream quirks reproduced on purpose:
* New reservation ids are the first unused of HATHAT, HATHAU, HATHAV, else
  "Too many reservations"; new certificates are the first unused of
  certificate_3221322/3/4 for that user, else "Too many certificates"; the clock is
  fixed at 2024-05-15T15:00:00.
* Tool arguments are not validated: list arguments are converted to models only when
  every element is a dict, `send_certificate` echoes `amount` as passed ("... with
  amount 150."), and an unknown cabin surfaces as a KeyError ("Error: 'first'") or a
  pydantic ValidationError, whichever the upstream code hits first.
* `cancel_reservation` appends negated copies of every payment and does not release
  seats; `update_reservation_flights` neither takes nor releases seats; a flight kept
  unchanged keeps its old price only if the cabin is unchanged.
* `search_onestop_flight` computes the next day as f"2024-05-{day + 1}" (no zero pad).
* `_payment_for_update` charges a gift card before the payment record is made, and a
  zero total makes no payment record.
* Lookups are exact (case-sensitive) dict lookups. (Newer upstream commits also accept
  case/diacritic-folded ids for the voice benchmark; ids copied from tool output, as in
  the text benchmark, behave identically either way.)
"""

from copy import deepcopy
from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, Field

from orchestra.envs.domains.base import DB, GENERIC, READ, WRITE, Domain, Toolkit, tool

FlightType = Literal["round_trip", "one_way"]
CabinClass = Literal["business", "economy", "basic_economy"]
Insurance = Literal["yes", "no"]
MembershipLevel = Literal["gold", "silver", "regular"]
NOW = "2024-05-15T15:00:00"
NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
NEW_CERTIFICATE_NUMBERS = (3221322, 3221323, 3221324)


class AirportCode(BaseModel):
  iata: str
  city: str


class Name(BaseModel):
  first_name: str
  last_name: str


class Address(BaseModel):
  address1: str
  address2: Optional[str] = None
  city: str
  country: str
  state: str
  zip: str


class Payment(BaseModel):
  payment_id: str = Field(description="Unique identifier for the payment")
  amount: int = Field(description="Payment amount in dollars")


class PaymentMethodBase(BaseModel):
  source: str
  id: str


class CreditCard(PaymentMethodBase):
  source: Literal["credit_card"]
  brand: str
  last_four: str


class GiftCard(PaymentMethodBase):
  source: Literal["gift_card"]
  amount: float
  id: str


class Certificate(PaymentMethodBase):
  source: Literal["certificate"]
  amount: float


PaymentMethod = Union[CreditCard, GiftCard, Certificate]


class Passenger(BaseModel):
  first_name: str = Field(description="Passenger's first name")
  last_name: str = Field(description="Passenger's last name")
  dob: str = Field(description="Date of birth in YYYY-MM-DD format")


class FlightDateStatusAvailable(BaseModel):
  status: Literal["available"]
  available_seats: Dict[CabinClass, int]
  prices: Dict[CabinClass, int]


class FlightDataStatusOnTime(BaseModel):
  status: Literal["on time"]
  estimated_departure_time_est: str
  estimated_arrival_time_est: str


class FlightDataStatusFlying(BaseModel):
  status: Literal["flying"]
  actual_departure_time_est: str
  estimated_arrival_time_est: str


class FlightDateStatusLanded(BaseModel):
  status: Literal["landed"]
  actual_departure_time_est: str
  actual_arrival_time_est: str


class FlightDateStatusCancelled(BaseModel):
  status: Literal["cancelled"]


class FlightDateStatusDelayed(BaseModel):
  status: Literal["delayed"]
  estimated_departure_time_est: str
  estimated_arrival_time_est: str


FlightDateStatus = Union[FlightDateStatusAvailable, FlightDateStatusLanded,
                         FlightDateStatusCancelled, FlightDateStatusDelayed,
                         FlightDataStatusFlying, FlightDataStatusOnTime]


class FlightBase(BaseModel):
  flight_number: str
  origin: str
  destination: str


class Flight(FlightBase):
  scheduled_departure_time_est: str
  scheduled_arrival_time_est: str
  dates: Dict[str, FlightDateStatus]


class DirectFlight(FlightBase):
  status: Literal["available"]
  scheduled_departure_time_est: str
  scheduled_arrival_time_est: str
  date: Optional[str] = None
  available_seats: Dict[CabinClass, int]
  prices: Dict[CabinClass, int]


class ReservationFlight(FlightBase):
  date: str
  price: int


class FlightInfo(BaseModel):
  flight_number: str = Field(description="Flight number, such as 'HAT001'.")
  date: str = Field(
      description="The date for the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.")


class User(BaseModel):
  user_id: str
  name: Name
  address: Address
  email: str
  dob: str
  payment_methods: Dict[str, PaymentMethod]
  saved_passengers: List[Passenger]
  membership: MembershipLevel
  reservations: List[str]


class Reservation(BaseModel):
  reservation_id: str
  user_id: str
  origin: str
  destination: str
  flight_type: FlightType
  cabin: CabinClass
  flights: List[ReservationFlight]
  passengers: List[Passenger]
  payment_history: List[Payment]
  created_at: str
  total_baggages: int
  nonfree_baggages: int
  insurance: Insurance
  status: Optional[Literal["cancelled"]] = None


class FlightDB(DB):
  """All flights, users and reservations, each indexed by its id."""

  flights: Dict[str, Flight]
  users: Dict[str, User]
  reservations: Dict[str, Reservation]


AIRPORTS = (("SFO", "San Francisco"), ("JFK", "New York"), ("LAX", "Los Angeles"),
            ("ORD", "Chicago"), ("DFW", "Dallas"), ("DEN", "Denver"), ("SEA", "Seattle"),
            ("ATL", "Atlanta"), ("MIA", "Miami"), ("BOS", "Boston"), ("PHX", "Phoenix"),
            ("IAH", "Houston"), ("LAS", "Las Vegas"), ("MCO", "Orlando"), ("EWR", "Newark"),
            ("CLT", "Charlotte"), ("MSP", "Minneapolis"), ("DTW", "Detroit"),
            ("PHL", "Philadelphia"), ("LGA", "LaGuardia"))


class AirlineTools(Toolkit):
  """The airline tools (class name as upstream, so TypeError messages match)."""

  db: FlightDB

  # ---------------------------------------------------------------- lookups
  def _get_user(self, user_id: str) -> User:
    if user_id not in self.db.users:
      raise ValueError(f"User {user_id} not found")
    return self.db.users[user_id]

  def _get_reservation(self, reservation_id: str) -> Reservation:
    if reservation_id not in self.db.reservations:
      raise ValueError(f"Reservation {reservation_id} not found")
    return self.db.reservations[reservation_id]

  def _get_flight(self, flight_number: str) -> Flight:
    if flight_number not in self.db.flights:
      raise ValueError(f"Flight {flight_number} not found")
    return self.db.flights[flight_number]

  def _get_flight_instance(self, flight_number: str, date: str) -> FlightDateStatus:
    flight = self._get_flight(flight_number)
    if date not in flight.dates:
      raise ValueError(f"Flight {flight_number} not found on date {date}")
    return flight.dates[date]

  def _new_reservation_id(self) -> str:
    for reservation_id in NEW_RESERVATION_IDS:
      if reservation_id not in self.db.reservations:
        return reservation_id
    raise ValueError("Too many reservations")

  def _search_direct_flight(self, date: str, origin: Optional[str] = None,
                            destination: Optional[str] = None,
                            leave_after: Optional[str] = None) -> list[DirectFlight]:
    results = []
    for flight in self.db.flights.values():
      if ((origin is None or flight.origin == origin)
          and (destination is None or flight.destination == destination)
          and date in flight.dates and flight.dates[date].status == "available"
          and (leave_after is None or flight.scheduled_departure_time_est >= leave_after)):
        results.append(DirectFlight(
            flight_number=flight.flight_number, origin=flight.origin,
            destination=flight.destination, status="available",
            scheduled_departure_time_est=flight.scheduled_departure_time_est,
            scheduled_arrival_time_est=flight.scheduled_arrival_time_est,
            available_seats=flight.dates[date].available_seats,
            prices=flight.dates[date].prices))
    return results

  def _payment_for_update(self, user: User, payment_id: str,
                          total_price: int) -> Optional[Payment]:
    if payment_id not in user.payment_methods:
      raise ValueError("Payment method not found")
    method = user.payment_methods[payment_id]
    if method.source == "certificate":
      raise ValueError("Certificate cannot be used to update reservation")
    elif method.source == "gift_card" and method.amount < total_price:
      raise ValueError("Gift card balance is not enough")
    if method.source == "gift_card":
      method.amount -= total_price
    if total_price != 0:
      return Payment(payment_id=payment_id, amount=total_price)
    return None

  # ------------------------------------------------------------------ tools
  @tool(WRITE)
  def book_reservation(
      self,
      user_id: str,
      origin: str,
      destination: str,
      flight_type: FlightType,
      cabin: CabinClass,
      flights: List[FlightInfo | dict],
      passengers: List[Passenger | dict],
      payment_methods: List[Payment | dict],
      total_baggages: int,
      nonfree_baggages: int,
      insurance: Insurance,
  ) -> Reservation:
    """
    Book a reservation.

    Args:
      user_id: The ID of the user to book the reservation such as 'sara_doe_496'`.
      origin: The IATA code for the origin city such as 'SFO'.
      destination: The IATA code for the destination city such as 'JFK'.
      flight_type: The type of flight such as 'one_way' or 'round_trip'.
      cabin: The cabin class such as 'basic_economy', 'economy', or 'business'.
      flights: An array of objects containing details about each piece of flight.
      passengers: An array of objects containing details about each passenger.
      payment_methods: An array of objects containing details about each payment method.
      total_baggages: The total number of baggage items to book the reservation.
      nonfree_baggages: The number of non-free baggage items to book the reservation.
      insurance: Whether the reservation has insurance.
    """
    if all(isinstance(f, dict) for f in flights):
      flights = [FlightInfo(**f) for f in flights]
    if all(isinstance(p, dict) for p in passengers):
      passengers = [Passenger(**p) for p in passengers]
    if all(isinstance(p, dict) for p in payment_methods):
      payment_methods = [Payment(**p) for p in payment_methods]
    user = self._get_user(user_id)
    reservation_id = self._new_reservation_id()
    reservation = Reservation(
        reservation_id=reservation_id, user_id=user_id, origin=origin,
        destination=destination, flight_type=flight_type, cabin=cabin, flights=[],
        passengers=deepcopy(passengers), payment_history=deepcopy(payment_methods),
        created_at=NOW, total_baggages=total_baggages, nonfree_baggages=nonfree_baggages,
        insurance=insurance)

    total_price = 0
    date_data_to_update: list[FlightDateStatusAvailable] = []
    for info in flights:
      flight = self._get_flight(info.flight_number)
      date_data = self._get_flight_instance(flight_number=info.flight_number, date=info.date)
      if not isinstance(date_data, FlightDateStatusAvailable):
        raise ValueError(f"Flight {info.flight_number} not available on date {info.date}")
      if date_data.available_seats[cabin] < len(passengers):
        raise ValueError(f"Not enough seats on flight {info.flight_number}")
      price = date_data.prices[cabin]
      reservation.flights.append(ReservationFlight(
          origin=flight.origin, destination=flight.destination,
          flight_number=info.flight_number, date=info.date, price=price))
      date_data_to_update.append(date_data)
      total_price += price * len(passengers)
    if insurance == "yes":
      total_price += 30 * len(passengers)
    total_price += 50 * nonfree_baggages

    for payment in payment_methods:
      if payment.payment_id not in user.payment_methods:
        raise ValueError(f"Payment method {payment.payment_id} not found")
      method = user.payment_methods[payment.payment_id]
      if method.source in {"gift_card", "certificate"} and method.amount < payment.amount:
        raise ValueError(f"Not enough balance in payment method {payment.payment_id}")
    total_payment = sum(payment.amount for payment in payment_methods)
    if total_payment != total_price:
      raise ValueError(f"Payment amount does not add up, total price is {total_price}, "
                       f"but paid {total_payment}")

    for payment in payment_methods:  # all checks passed: charge
      method = user.payment_methods[payment.payment_id]
      if method.source == "gift_card":
        method.amount -= payment.amount
      elif method.source == "certificate":
        user.payment_methods.pop(payment.payment_id)
    for date_data in date_data_to_update:
      date_data.available_seats[cabin] -= len(passengers)
    self.db.reservations[reservation_id] = reservation
    self.db.users[user_id].reservations.append(reservation_id)
    return reservation

  @tool(GENERIC)
  def calculate(self, expression: str) -> str:
    """
    Calculate the result of a mathematical expression.

    Args:
      expression: The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, operators (+, -, *, /), parentheses, and spaces.
    """
    if not all(char in "0123456789+-*/(). " for char in expression):
      raise ValueError("Invalid characters in expression")
    return str(round(float(eval(expression, {"__builtins__": None}, {})), 2))

  @tool(WRITE)
  def cancel_reservation(self, reservation_id: str) -> Reservation:
    """
    Cancel the whole reservation.

    Args:
      reservation_id: The reservation ID, such as 'ZFA04Y'.
    """
    reservation = self._get_reservation(reservation_id)
    refunds = [Payment(payment_id=p.payment_id, amount=-p.amount)
               for p in reservation.payment_history]
    reservation.payment_history.extend(refunds)
    reservation.status = "cancelled"
    return reservation  # seats are not released (upstream behaviour)

  @tool(READ)
  def get_reservation_details(self, reservation_id: str) -> Reservation:
    """
    Get the details of a reservation.

    Args:
      reservation_id: The reservation ID, such as '8JX2WO'.
    """
    return self._get_reservation(reservation_id)

  @tool(READ)
  def get_user_details(self, user_id: str) -> User:
    """
    Get the details of a user, including their reservations.

    Args:
      user_id: The user ID, such as 'sara_doe_496'.
    """
    return self._get_user(user_id)

  @tool(READ)
  def list_all_airports(self) -> list[AirportCode]:
    """Returns a list of all available airports."""
    return [AirportCode(iata=iata, city=city) for iata, city in AIRPORTS]

  @tool(READ)
  def search_direct_flight(self, origin: str, destination: str, date: str) -> list[DirectFlight]:
    """
    Search for direct flights between two cities on a specific date.

    Args:
      origin: The origin city airport in three letters, such as 'JFK'.
      destination: The destination city airport in three letters, such as 'LAX'.
      date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-01-01'.
    """
    return self._search_direct_flight(date=date, origin=origin, destination=destination)

  @tool(READ)
  def search_onestop_flight(self, origin: str, destination: str,
                            date: str) -> list[list[DirectFlight]]:
    """
    Search for one-stop flights between two cities on a specific date.

    Args:
      origin: The origin city airport in three letters, such as 'JFK'.
      destination: The destination city airport in three letters, such as 'LAX'.
      date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.
    """
    results = []
    for first in self._search_direct_flight(date=date, origin=origin, destination=None):
      first.date = date
      date2 = (f"2024-05-{int(date[-2:]) + 1}" if "+1" in first.scheduled_arrival_time_est
               else date)
      for second in self._search_direct_flight(
          date=date2, origin=first.destination, destination=destination,
          leave_after=first.scheduled_arrival_time_est):
        second.date = date2
        results.append([first, second])
    return results

  @tool(WRITE)
  def send_certificate(self, user_id: str, amount: int) -> str:
    """
    Send a certificate to a user. Be careful!

    Args:
      user_id: The ID of the user to book the reservation, such as 'sara_doe_496'.
      amount: The amount of the certificate to send.
    """
    user = self._get_user(user_id)
    for number in NEW_CERTIFICATE_NUMBERS:
      payment_id = f"certificate_{number}"
      if payment_id not in user.payment_methods:
        user.payment_methods[payment_id] = Certificate(
            id=payment_id, amount=amount, source="certificate")
        return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
    raise ValueError("Too many certificates")

  @tool(GENERIC)
  def transfer_to_human_agents(self, summary: str) -> str:
    """
    Transfer the user to a human agent, with a summary of the user's issue.
    Only transfer if
     -  the user explicitly asks for a human agent
     -  given the policy and the available tools, you cannot solve the user's issue.

    Args:
      summary: A summary of the user's issue.
    """
    return "Transfer successful"

  @tool(WRITE)
  def update_reservation_baggages(self, reservation_id: str, total_baggages: int,
                                  nonfree_baggages: int, payment_id: str) -> Reservation:
    """
    Update the baggage information of a reservation.

    Args:
      reservation_id: The reservation ID, such as 'ZFA04Y'
      total_baggages: The updated total number of baggage items included in the reservation.
      nonfree_baggages: The updated number of non-free baggage items included in the reservation.
      payment_id: The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.
    """
    reservation = self._get_reservation(reservation_id)
    user = self._get_user(reservation.user_id)
    total_price = 50 * max(0, nonfree_baggages - reservation.nonfree_baggages)
    payment = self._payment_for_update(user, payment_id, total_price)
    if payment is not None:
      reservation.payment_history.append(payment)
    reservation.total_baggages = total_baggages
    reservation.nonfree_baggages = nonfree_baggages
    return reservation

  @tool(WRITE)
  def update_reservation_flights(self, reservation_id: str, cabin: CabinClass,
                                 flights: List[FlightInfo | dict],
                                 payment_id: str) -> Reservation:
    """
    Update the flight information of a reservation.


    Args:
      reservation_id: The reservation ID, such as 'ZFA04Y'.
      cabin: The cabin class of the reservation
      flights: An array of objects containing details about each piece of flight in the ENTIRE new reservation. Even if the a flight segment is not changed, it should still be included in the array.
      payment_id: The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.
    """
    if all(isinstance(f, dict) for f in flights):
      flights = [FlightInfo(**f) for f in flights]
    reservation = self._get_reservation(reservation_id)
    user = self._get_user(reservation.user_id)

    total_price = 0
    new_flights = []
    for info in flights:
      kept = next((rf for rf in reservation.flights
                   if rf.flight_number == info.flight_number and rf.date == info.date
                   and cabin == reservation.cabin), None)
      if kept:
        total_price += kept.price * len(reservation.passengers)
        new_flights.append(kept)
        continue
      flight = self._get_flight(info.flight_number)
      date_data = self._get_flight_instance(flight_number=info.flight_number, date=info.date)
      if not isinstance(date_data, FlightDateStatusAvailable):
        raise ValueError(f"Flight {info.flight_number} not available on date {info.date}")
      if date_data.available_seats[cabin] < len(reservation.passengers):
        raise ValueError(f"Not enough seats on flight {info.flight_number}")
      new_flight = ReservationFlight(
          flight_number=info.flight_number, date=info.date, price=date_data.prices[cabin],
          origin=flight.origin, destination=flight.destination)
      total_price += new_flight.price * len(reservation.passengers)
      new_flights.append(new_flight)
    total_price -= sum(f.price for f in reservation.flights) * len(reservation.passengers)

    payment = self._payment_for_update(user, payment_id, total_price)
    if payment is not None:
      reservation.payment_history.append(payment)
    reservation.flights = new_flights
    reservation.cabin = cabin
    return reservation  # seat counts are not updated (upstream behaviour)

  @tool(WRITE)
  def update_reservation_passengers(self, reservation_id: str,
                                    passengers: List[Passenger | dict]) -> Reservation:
    """
    Update the passenger information of a reservation.

    Args:
      reservation_id: The reservation ID, such as 'ZFA04Y'.
      passengers: An array of objects containing details about each passenger.
    """
    if all(isinstance(p, dict) for p in passengers):
      passengers = [Passenger(**p) for p in passengers]
    reservation = self._get_reservation(reservation_id)
    if len(passengers) != len(reservation.passengers):
      raise ValueError("Number of passengers does not match")
    reservation.passengers = deepcopy(passengers)
    return reservation

  @tool(READ)
  def get_flight_status(self, flight_number: str, date: str) -> str:
    """
    Get the status of a flight.

    Args:
      flight_number: The flight number.
      date: The date of the flight.
    """
    return self._get_flight_instance(flight_number, date).status


def build_domain(data_dir: Path | str) -> Domain:
  """Loads the airline domain from the tau2 data folder (holding domains/airline/)."""
  return Domain.from_dir("airline", data_dir, FlightDB, AirlineTools)
