"""The tau2 retail domain: the `RetailDB` data model and the 16 retail tools.

Behaviour follows tau2-bench's `domains/retail/{data_model,tools}.py` (MIT): field
declaration order (it fixes the key order of tool outputs), field types (prices,
balances and payment amounts are floats, `available` a bool), tool order, docstrings
(they are the tool schemas), error messages and the order of arithmetic (it fixes the
state hash, see STATE_HASH.md).

Upstream quirks reproduced on purpose:
* `modify_pending_order_items` gives every modified item the `price` and `options` of
  the LAST new variant checked (the loop variable leaks), while `item_id` is set
  correctly; the payment/refund amount is `abs(sum(new - old))`, not rounded.
* `exchange_delivered_order_items` rounds the price difference to cents; gift-card
  balances are rounded to cents after every change.
* `cancel_pending_order` requires status exactly "pending"; address and payment changes
  accept any status containing "pending" ("pending (item modified)" too).
* `modify_pending_order_items` checks the gift-card balance against the signed price
  difference, and refunds (negative differences) go back to the gift card as well.
* `find_user_id_by_email` / `find_user_id_by_name_zip` compare names and emails
  case-insensitively (the zip exactly) and return the first match in DB order.
"""

import json
from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, Field

from orchestra.envs.domains.base import DB, GENERIC, READ, WRITE, Domain, Toolkit, tool


class Variant(BaseModel):
  """A specific variant (item) of a product with its options, availability and price."""

  item_id: str = Field(description="Unique identifier for the variant")
  options: Dict[str, str] = Field(description="Option names to values")
  available: bool = Field(description="Whether this variant is currently in stock")
  price: float = Field(description="Price of this variant")


class Product(BaseModel):
  """A product type with its variants."""

  name: str = Field(description="Name of the product")
  product_id: str = Field(description="Unique identifier for the product")
  variants: Dict[str, Variant] = Field(description="Variants indexed by item id")


class UserName(BaseModel):
  first_name: str
  last_name: str


class UserAddress(BaseModel):
  address1: str
  address2: str
  city: str
  country: str
  state: str
  zip: str


class PaymentMethodBase(BaseModel):
  source: str
  id: str


class CreditCard(PaymentMethodBase):
  source: Literal["credit_card"]
  brand: str
  last_four: str


class Paypal(PaymentMethodBase):
  source: Literal["paypal"]


class GiftCard(PaymentMethodBase):
  source: Literal["gift_card"]
  balance: float
  id: str


PaymentMethod = Union[CreditCard, GiftCard, Paypal]


class User(BaseModel):
  user_id: str
  name: UserName
  address: UserAddress
  email: str
  payment_methods: Dict[str, PaymentMethod]
  orders: List[str]


class OrderFullfilment(BaseModel):  # sic, upstream spelling
  tracking_id: list[str]
  item_ids: list[str]


class OrderItem(BaseModel):
  name: str
  product_id: str
  item_id: str
  price: float
  options: Dict[str, str]


class OrderPayment(BaseModel):
  transaction_type: Literal["payment", "refund"]
  amount: float
  payment_method_id: str


OrderStatus = Literal["processed", "pending", "pending (item modified)", "delivered",
                      "cancelled", "exchange requested", "return requested"]
CancelReason = Literal["no longer needed", "ordered by mistake"]


class Order(BaseModel):
  order_id: str
  user_id: str
  address: UserAddress
  items: List[OrderItem]
  status: OrderStatus
  fulfillments: List[OrderFullfilment]
  payment_history: List[OrderPayment]
  cancel_reason: Optional[CancelReason] = None
  exchange_items: Optional[List[str]] = None
  exchange_new_items: Optional[List[str]] = None
  exchange_payment_method_id: Optional[str] = None
  exchange_price_difference: Optional[float] = None
  return_items: Optional[List[str]] = None
  return_payment_method_id: Optional[str] = None


class RetailDB(DB):
  """All products, users and orders, each indexed by its id."""

  products: Dict[str, Product]
  users: Dict[str, User]
  orders: Dict[str, Order]


class RetailTools(Toolkit):
  """The retail tools (class name as upstream, so TypeError messages match)."""

  db: RetailDB

  # ---------------------------------------------------------------- lookups
  def _get_order(self, order_id: str) -> Order:
    if order_id not in self.db.orders:
      raise ValueError("Order not found")
    return self.db.orders[order_id]

  def _get_user(self, user_id: str) -> User:
    if user_id not in self.db.users:
      raise ValueError("User not found")
    return self.db.users[user_id]

  def _get_product(self, product_id: str) -> Product:
    if product_id not in self.db.products:
      raise ValueError("Product not found")
    return self.db.products[product_id]

  def _get_item(self, item_id: str) -> Variant:
    for product in self.db.products.values():
      if item_id in product.variants:
        return product.variants[item_id]
    raise ValueError("Item not found")

  def _get_variant(self, product_id: str, variant_id: str) -> Variant:
    product = self._get_product(product_id)
    if variant_id not in product.variants:
      raise ValueError("Variant not found")
    return product.variants[variant_id]

  def _get_payment_method(self, user_id: str, payment_method_id: str) -> PaymentMethod:
    user = self._get_user(user_id)
    if payment_method_id not in user.payment_methods:
      raise ValueError("Payment method not found")
    return user.payment_methods[payment_method_id]

  @staticmethod
  def _is_pending_order(order: Order) -> bool:
    return "pending" in order.status

  @staticmethod
  def _check_items_exist(order: Order, item_ids: List[str], message: str) -> None:
    """Raises `message.format(item_id)` unless the order holds every id (with multiplicity)."""
    all_item_ids = [item.item_id for item in order.items]
    for item_id in item_ids:
      if item_ids.count(item_id) > all_item_ids.count(item_id):
        raise ValueError(message.format(item_id))

  # ------------------------------------------------------------------ tools
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
  def cancel_pending_order(self, order_id: str, reason: str) -> Order:
    """Cancel a pending order. If the order is already processed or delivered,
    it cannot be cancelled. The agent needs to explain the cancellation detail
    and ask for explicit user confirmation (yes/no) to proceed. If the user confirms,
    the order status will be changed to 'cancelled' and the payment will be refunded.
    The refund will be added to the user's gift card balance immediately if the payment
    was made using a gift card, otherwise the refund would take 5-7 business days to process.
    The function returns the order details after the cancellation.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      reason: The reason for cancellation, which should be either 'no longer needed' or 'ordered by mistake'.
    """
    order = self._get_order(order_id)
    if order.status != "pending":
      raise ValueError("Non-pending order cannot be cancelled")
    if reason not in {"no longer needed", "ordered by mistake"}:
      raise ValueError("Invalid reason")
    refunds = []
    for payment in order.payment_history:
      refunds.append(OrderPayment(transaction_type="refund", amount=payment.amount,
                                  payment_method_id=payment.payment_method_id))
      user = self._get_user(order.user_id)
      method = self._get_payment_method(user.user_id, payment.payment_method_id)
      if isinstance(method, GiftCard):  # gift cards are refunded immediately
        method.balance += payment.amount
        method.balance = round(method.balance, 2)
    order.status = "cancelled"
    order.cancel_reason = reason
    order.payment_history.extend(refunds)
    return order

  @tool(WRITE)
  def exchange_delivered_order_items(self, order_id: str, item_ids: List[str],
                                     new_item_ids: List[str],
                                     payment_method_id: str) -> Order:
    """Exchange items in a delivered order to new items of the same product type.
    For a delivered order, return or exchange can be only done once by the agent.
    The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      item_ids: The item ids to be exchanged, each such as '1008292230'. There could be duplicate items in the list.
      new_item_ids: The item ids to be exchanged for, each such as '1008292230'.
                    There could be duplicate items in the list. Each new item id should match the item id
                    in the same position and be of the same product.
      payment_method_id: The payment method id to pay or receive refund for the item price difference,
                         such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up
                         from the user or order details.
    """
    order = self._get_order(order_id)
    if order.status != "delivered":
      raise ValueError("Non-delivered order cannot be exchanged")
    self._check_items_exist(order, item_ids, "Number of {} not found.")
    if len(item_ids) != len(new_item_ids):
      raise ValueError("The number of items to be exchanged should match.")
    diff_price = 0
    for item_id, new_item_id in zip(item_ids, new_item_ids):
      item = next((it for it in order.items if it.item_id == item_id), None)
      if item is None:
        raise ValueError(f"Item {item_id} not found")
      variant = self._get_variant(item.product_id, new_item_id)
      if not variant.available:
        raise ValueError(f"New item {new_item_id} not found or available")
      diff_price += variant.price - item.price
    diff_price = round(diff_price, 2)
    method = self._get_payment_method(order.user_id, payment_method_id)
    if isinstance(method, GiftCard) and method.balance < diff_price:
      raise ValueError("Insufficient gift card balance to pay for the price difference")
    order.status = "exchange requested"
    order.exchange_items = sorted(item_ids)
    order.exchange_new_items = sorted(new_item_ids)
    order.exchange_payment_method_id = payment_method_id
    order.exchange_price_difference = diff_price
    return order

  @tool(READ)
  def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
    """Find user id by first name, last name, and zip code. If the user is not found, the function
    will return an error message. By default, find user id by email, and only call this function
    if the user is not found by email or cannot remember email.

    Args:
      first_name: The first name of the customer, such as 'John'.
      last_name: The last name of the customer, such as 'Doe'.
      zip: The zip code of the customer, such as '12345'.
    """
    for user_id, user in self.db.users.items():
      if (user.name.first_name.lower() == first_name.lower()
          and user.name.last_name.lower() == last_name.lower()
          and user.address.zip == zip):
        return user_id
    raise ValueError("User not found")

  @tool(READ)
  def find_user_id_by_email(self, email: str) -> str:
    """Find user id by email. If the user is not found, the function will return an error message.

    Args:
      email: The email of the user, such as 'something@example.com'.
    """
    for user_id, user in self.db.users.items():
      if user.email.lower() == email.lower():
        return user_id
    raise ValueError("User not found")

  @tool(READ)
  def get_order_details(self, order_id: str) -> Order:
    """Get the status and details of an order.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
    """
    return self._get_order(order_id)

  @tool(READ)
  def get_product_details(self, product_id: str) -> Product:
    """Get the inventory details of a product.

    Args:
      product_id: The product id, such as '6086499569'. Be careful the product id is different from the item id.
    """
    return self._get_product(product_id)

  @tool(READ)
  def get_item_details(self, item_id: str) -> Variant:
    """Get the inventory details of an item.

    Args:
      item_id: The item id, such as '6086499569'. Be careful the item id is different from the product id.
    """
    return self._get_item(item_id)

  @tool(READ)
  def get_user_details(self, user_id: str) -> User:
    """Get the details of a user, including their orders.

    Args:
      user_id: The user id, such as 'sara_doe_496'.
    """
    return self._get_user(user_id)

  @tool(READ)
  def list_all_product_types(self) -> str:
    """List the name and product id of all product types.
    Each product type has a variety of different items with unique item ids and options.
    There are only 50 product types in the store.
    """
    names = {product.name: product.product_id for product in self.db.products.values()}
    return json.dumps(names, sort_keys=True)

  @tool(WRITE)
  def modify_pending_order_address(self, order_id: str, address1: str, address2: str,
                                   city: str, state: str, country: str, zip: str) -> Order:
    """Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      address1: The first line of the address, such as '123 Main St'.
      address2: The second line of the address, such as 'Apt 1' or ''.
      city: The city, such as 'San Francisco'.
      state: The state, such as 'CA'.
      country: The country, such as 'USA'.
      zip: The zip code, such as '12345'.
    """
    order = self._get_order(order_id)
    if not self._is_pending_order(order):
      raise ValueError("Non-pending order cannot be modified")
    order.address = UserAddress(address1=address1, address2=address2, city=city,
                                state=state, country=country, zip=zip)
    return order

  @tool(WRITE)
  def modify_pending_order_items(self, order_id: str, item_ids: List[str],
                                 new_item_ids: List[str], payment_method_id: str) -> Order:
    """Modify items in a pending order to new items of the same product type. For a pending order, this function can only be called once. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      item_ids: The item ids to be modified, each such as '1008292230'. There could be duplicate items in the list.
      new_item_ids: The item ids to be modified for, each such as '1008292230'. There could be duplicate items in the list. Each new item id should match the item id in the same position and be of the same product.
      payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.
    """
    order = self._get_order(order_id)
    if order.status != "pending":
      raise ValueError("Non-pending order cannot be modified")
    self._check_items_exist(order, item_ids, "{} not found")
    if len(item_ids) != len(new_item_ids):
      raise ValueError("The number of items to be exchanged should match")
    diff_price = 0
    variant = None
    for item_id, new_item_id in zip(item_ids, new_item_ids):
      if item_id == new_item_id:
        raise ValueError("The new item id should be different from the old item id")
      item = next((it for it in order.items if it.item_id == item_id), None)
      if item is None:
        raise ValueError(f"Item {item_id} not found")
      variant = self._get_variant(item.product_id, new_item_id)
      if not variant.available:
        raise ValueError(f"New item {new_item_id} not found or available")
      diff_price += variant.price - item.price
    method = self._get_payment_method(order.user_id, payment_method_id)
    if isinstance(method, GiftCard) and method.balance < diff_price:
      raise ValueError("Insufficient gift card balance to pay for the new item")
    order.payment_history.append(OrderPayment(
        transaction_type="payment" if diff_price > 0 else "refund", amount=abs(diff_price),
        payment_method_id=payment_method_id))
    if isinstance(method, GiftCard):
      method.balance -= diff_price
      method.balance = round(method.balance, 2)
    for item_id, new_item_id in zip(item_ids, new_item_ids):
      item = next((it for it in order.items if it.item_id == item_id), None)
      if item is None:
        raise ValueError(f"Item {item_id} not found")
      item.item_id = new_item_id
      item.price = variant.price  # the LAST variant checked above (upstream behaviour)
      item.options = variant.options
    order.status = "pending (item modified)"
    return order

  @tool(WRITE)
  def modify_pending_order_payment(self, order_id: str, payment_method_id: str) -> Order:
    """Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.
    """
    order = self._get_order(order_id)
    if not self._is_pending_order(order):
      raise ValueError("Non-pending order cannot be modified")
    method = self._get_payment_method(order.user_id, payment_method_id)
    if (len(order.payment_history) != 1
        or order.payment_history[0].transaction_type != "payment"):
      raise ValueError("There should be exactly one payment for a pending order")
    if order.payment_history[0].payment_method_id == payment_method_id:
      raise ValueError("The new payment method should be different from the current one")
    amount = order.payment_history[0].amount
    if isinstance(method, GiftCard) and method.balance < amount:
      raise ValueError("Insufficient gift card balance to pay for the order")
    order.payment_history.extend([
        OrderPayment(transaction_type="payment", amount=amount,
                     payment_method_id=payment_method_id),
        OrderPayment(transaction_type="refund", amount=amount,
                     payment_method_id=order.payment_history[0].payment_method_id),
    ])
    if isinstance(method, GiftCard):
      method.balance -= amount
      method.balance = round(method.balance, 2)
    old_method = self._get_payment_method(order.user_id,
                                          order.payment_history[0].payment_method_id)
    if isinstance(old_method, GiftCard):
      old_method.balance += amount
      old_method.balance = round(old_method.balance, 2)
    return order

  @tool(WRITE)
  def modify_user_address(self, user_id: str, address1: str, address2: str, city: str,
                          state: str, country: str, zip: str) -> User:
    """Modify the default address of a user. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
      user_id: The user id, such as 'sara_doe_496'.
      address1: The first line of the address, such as '123 Main St'.
      address2: The second line of the address, such as 'Apt 1' or ''.
      city: The city, such as 'San Francisco'.
      state: The state, such as 'CA'.
      country: The country, such as 'USA'.
      zip: The zip code, such as '12345'.
    """
    user = self._get_user(user_id)
    user.address = UserAddress(address1=address1, address2=address2, city=city,
                               state=state, country=country, zip=zip)
    return user

  @tool(WRITE)
  def return_delivered_order_items(self, order_id: str, item_ids: List[str],
                                   payment_method_id: str) -> Order:
    """Return some items of a delivered order.
    The order status will be changed to 'return requested'.
    The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed.
    The user will receive follow-up email for how and where to return the item.

    Args:
      order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
      item_ids: The item ids to be returned, each such as '1008292230'. There could be duplicate items in the list.
      payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'.
                         These can be looked up from the user or order details.
    """
    order = self._get_order(order_id)
    if order.status != "delivered":
      raise ValueError("Non-delivered order cannot be returned")
    user = self._get_user(order.user_id)
    method = self._get_payment_method(user.user_id, payment_method_id)
    if (not isinstance(method, GiftCard)
        and payment_method_id != order.payment_history[0].payment_method_id):
      raise ValueError("Payment method should be the original payment method")
    self._check_items_exist(order, item_ids, "Some item not found")
    order.status = "return requested"
    order.return_items = sorted(item_ids)
    order.return_payment_method_id = payment_method_id
    return order

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


def build_domain(data_dir: Path | str) -> Domain:
  """Loads the retail domain from the tau2 data folder (holding domains/retail/)."""
  return Domain.from_dir("retail", data_dir, RetailDB, RetailTools)
