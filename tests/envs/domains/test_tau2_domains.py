"""tau2 airline/retail: initial hashes, tool schemas, gold replay, order invariance, errors."""

import copy
import hashlib
import json

import pytest

from orchestra.envs.domains import dict_hash, load_domain, to_json_str
from orchestra.envs.domains.replay import replay_gold, replay_tool_calls

# From STATE_HASH.md (computed by upstream tau2 on the shipped db.json files).
INITIAL_HASH = {
    "airline": "124e39a664b56402bcd09cb8a6a9cece6acb8462337c969799d5658e3250f263",
    "retail": "b25c9cb211f5efcaee5dd646054a73c4a9f43f4f5acc32c10713cd9f9ac20e9c",
}
NUM_TASKS = {"airline": 50, "retail": 114}
NUM_TOOLS = {"airline": 14, "retail": 16}

# Gold actions that raise on a fresh environment, with the exact error string the agent sees.
# Each one is explained by the shipped db.json (checked independently in
# test_raising_gold_actions_are_explained_by_the_data): a product/order/user/email that does
# not exist, an order that is not delivered, or a gift card with too small a balance.
RAISING = {
    "airline": [],
    "retail": [
        ("2", "get_product_details", "Error: Product not found"),
        ("3", "get_product_details", "Error: Product not found"),
        ("4", "get_product_details", "Error: Product not found"),
        ("35", "find_user_id_by_email", "Error: User not found"),
        ("37", "find_user_id_by_email", "Error: User not found"),
        ("38", "find_user_id_by_email", "Error: User not found"),
        ("39", "find_user_id_by_name_zip", "Error: User not found"),
        ("46", "get_order_details", "Error: Order not found"),
        ("46", "get_order_details", "Error: Order not found"),
        ("47", "get_order_details", "Error: Order not found"),
        ("47", "get_order_details", "Error: Order not found"),
        ("54", "find_user_id_by_email", "Error: User not found"),
        ("55", "find_user_id_by_email", "Error: User not found"),
        ("64", "exchange_delivered_order_items",
         "Error: Non-delivered order cannot be exchanged"),
        ("67", "find_user_id_by_name_zip", "Error: User not found"),
        ("67", "find_user_id_by_name_zip", "Error: User not found"),
        ("68", "find_user_id_by_name_zip", "Error: User not found"),
        ("105", "exchange_delivered_order_items",
         "Error: Insufficient gift card balance to pay for the price difference"),
    ],
}


def raw_db(tau2_data, name):
  return json.loads((tau2_data / "domains" / name / "db.json").read_text())


@pytest.mark.parametrize("name", ["airline", "retail"])
def test_initial_db_hash_equals_state_hash_md(domains, name):
  d = domains[name]
  assert d.initial_db_hash() == INITIAL_HASH[name]
  assert d.new_env().db_hash() == INITIAL_HASH[name]
  assert len(d.tasks) == NUM_TASKS[name]


def test_hash_is_sha256_of_sorted_python_mode_dump(domains):
  """The hash definition itself: sorted keys, default separators, floats kept as floats."""
  db = domains["retail"].fresh_db().dump()
  text = json.dumps(db, sort_keys=True, default=str)
  assert dict_hash(db) == hashlib.sha256(text.encode()).hexdigest()
  order = next(iter(db["orders"].values()))
  assert order["cancel_reason"] is None and isinstance(order["items"][0]["price"], float)


@pytest.mark.parametrize("name", ["airline", "retail"])
def test_tool_schemas_equal_upstream_exactly(domains, tau2_data, name):
  expected = json.loads((tau2_data / f"tool_schemas_{name}.json").read_text())
  ours = domains[name].tool_schemas()
  assert len(ours) == NUM_TOOLS[name]
  assert [s["function"]["name"] for s in ours] == [s["function"]["name"] for s in expected]
  for got, want in zip(ours, expected):
    assert got == want, got["function"]["name"]


@pytest.mark.parametrize("name", ["airline", "retail"])
def test_every_gold_action_runs_and_only_the_known_ones_raise(domains, gold_replays, name):
  records = gold_replays[name]
  assert [r["task_id"] for r in records] == [t.id for t in domains[name].tasks]
  raised = []
  for task, rec in zip(domains[name].tasks, records):
    assert rec["initial_db_hash"] == INITIAL_HASH[name]
    assert len(rec["actions"]) == len(task.gold_actions)
    for gold, act in zip(task.gold_actions, rec["actions"]):
      assert act["name"] == gold.name and act["arguments"] == gold.arguments
      assert isinstance(act["output"], str) and act["output"]
      assert act["error"] == act["output"].startswith("Error: ")
      if act["error"]:
        raised.append((task.id, act["name"], act["output"]))
  assert raised == RAISING[name]


def test_raising_gold_actions_are_explained_by_the_data(gold_replays, tau2_data):
  """Each raising gold action fails for a reason visible in db.json, not a bug of ours."""
  db = raw_db(tau2_data, "retail")
  emails = {u["email"].lower() for u in db["users"].values()}
  names = {(u["name"]["first_name"].lower(), u["name"]["last_name"].lower(), u["address"]["zip"])
           for u in db["users"].values()}
  variants = {vid: v for p in db["products"].values() for vid, v in p["variants"].items()}
  explained = 0
  for rec in gold_replays["retail"]:
    for act in rec["actions"]:
      if not act["error"]:
        continue
      args, name = act["arguments"], act["name"]
      if name == "get_product_details":
        assert args["product_id"] not in db["products"]
      elif name == "get_order_details":
        assert args["order_id"] not in db["orders"]
      elif name == "find_user_id_by_email":
        assert args["email"].lower() not in emails
      elif name == "find_user_id_by_name_zip":
        assert (args["first_name"].lower(), args["last_name"].lower(), args["zip"]) not in names
      elif act["output"] == "Error: Non-delivered order cannot be exchanged":
        assert db["orders"][args["order_id"]]["status"] != "delivered"
      else:
        order = db["orders"][args["order_id"]]
        card = db["users"][order["user_id"]]["payment_methods"][args["payment_method_id"]]
        prices = {i["item_id"]: i["price"] for i in order["items"]}
        diff = sum(variants[n]["price"] - prices[o]
                   for o, n in zip(args["item_ids"], args["new_item_ids"]))
        assert card["source"] == "gift_card" and card["balance"] < round(diff, 2)
      explained += 1
  assert explained == len(RAISING["retail"])


@pytest.mark.parametrize("name", ["airline", "retail"])
def test_gold_replay_changes_state_only_through_write_tools(domains, gold_replays, name):
  d = domains[name]
  for task, rec in zip(d.tasks, gold_replays[name]):
    writes = [a for a, r in zip(task.gold_actions, rec["actions"])
              if d.toolkit_cls.mutates_state(a.name) and not r["error"]]
    assert (rec["final_db_hash"] != rec["initial_db_hash"]) == bool(writes), task.id


def test_gold_replay_is_deterministic_and_independent_per_env(domains, gold_replays):
  d = domains["retail"]
  task = d.task("21")
  assert replay_gold(d, task) == gold_replays["retail"][d.tasks.index(task)]
  assert d.new_env().db_hash() == INITIAL_HASH["retail"]


def _reordered(domain, task):
  """The gold calls with the read-only ones moved after the writes, reversed (equivalent)."""
  calls = [{"name": a.name, "arguments": copy.deepcopy(a.arguments)} for a in task.gold_actions]
  writes = [c for c in calls if domain.toolkit_cls.mutates_state(c["name"])]
  reads = [c for c in calls if not domain.toolkit_cls.mutates_state(c["name"])]
  return writes + list(reversed(reads))


@pytest.mark.parametrize("name", ["airline", "retail"])
def test_equivalent_reordered_replay_gives_the_gold_hash(domains, gold_replays, name):
  """Reads moved after the writes (and reversed): same final state, on 4 tasks per domain."""
  d = domains[name]
  candidates = [(t, r) for t, r in zip(d.tasks, gold_replays[name])
                if r["final_db_hash"] != r["initial_db_hash"]
                and len(t.gold_actions) > sum(d.toolkit_cls.mutates_state(a.name)
                                              for a in t.gold_actions)]
  picked = candidates[::max(1, len(candidates) // 4)][:4]
  assert len(picked) == 4
  for task, rec in picked:
    calls = _reordered(d, task)
    assert [c["name"] for c in calls] != [a.name for a in task.gold_actions]
    env = d.new_env(task)
    for c in calls:
      env.execute(c["name"], c["arguments"])
    assert env.db_hash() == rec["final_db_hash"], task.id
  task, rec = picked[0]
  assert replay_tool_calls(d, task, _reordered(d, task)).db_hash() == rec["final_db_hash"]


def test_independent_writes_commute(domains):
  """Two writes on different records give one hash in either order."""
  d = domains["retail"]
  a = ("modify_user_address", {"user_id": "noah_brown_6181", "address1": "1 A St",
                               "address2": "", "city": "X", "state": "CA", "country": "USA",
                               "zip": "00001"})
  b = ("cancel_pending_order", {"order_id": "#W5918442", "reason": "no longer needed"})
  hashes = []
  for first, second in ((a, b), (b, a)):
    env = d.new_env()
    assert not env.execute(*first).error
    out = env.execute(*second)
    hashes.append(env.db_hash())
  assert hashes[0] == hashes[1] != INITIAL_HASH["retail"]
  assert not out.error


@pytest.mark.parametrize("name,task_id", [("airline", "1"), ("retail", "0")])
def test_a_wrong_action_changes_the_hash(domains, gold_replays, name, task_id):
  d = domains[name]
  task = d.task(task_id)
  gold = gold_replays[name][d.tasks.index(task)]["final_db_hash"]
  env = d.new_env(task)
  for a in task.gold_actions:
    env.execute(a.name, a.arguments)
  assert env.db_hash() == gold
  wrong = env.execute("modify_user_address", {
      "user_id": "noah_brown_6181", "address1": "9 Wrong Way", "address2": "", "city": "Nowhere",
      "state": "ZZ", "country": "USA", "zip": "99999"}) if name == "retail" else env.execute(
      "send_certificate", {"user_id": "mia_li_3668", "amount": 100})
  assert not wrong.error
  assert env.db_hash() != gold


def test_write_changes_hash_and_the_value_matters(domains):
  d = domains["airline"]
  h = []
  for amount in (100, 150):
    env = d.new_env()
    out = env.execute("send_certificate", {"user_id": "mia_li_3668", "amount": amount})
    assert out.text == (f"Certificate certificate_3221322 added to user mia_li_3668 "
                        f"with amount {amount}.")
    h.append(env.db_hash())
  assert len(set(h)) == 2 and INITIAL_HASH["airline"] not in h


def test_output_strings_and_errors_follow_tau2(domains):
  r = domains["retail"].new_env()
  assert r.execute("find_user_id_by_email", {"email": "NOAH.brown7922@example.com"}).text == \
      "noah_brown_6181"
  missing = r.execute("get_user_details", {"user_id": "nobody"})
  assert missing == type(missing)("Error: User not found", True)
  assert r.execute("no_such_tool", {}).text == "Error: Tool 'no_such_tool' not found."
  bad = r.execute("get_user_details", {"user": "x"})
  assert bad.error and "unexpected keyword argument 'user'" in bad.text
  out = r.execute("get_item_details", {"item_id": "9612497925"})
  assert out.text == ('{"item_id": "9612497925", "options": {"color": "blue", "size": "M", '
                      '"material": "cotton", "style": "crew neck"}, "available": true, '
                      '"price": 50.88}')
  order = json.loads(r.execute("get_order_details", {"order_id": "#W2611340"}).text)
  assert list(order)[-3:] == ["exchange_price_difference", "return_items",
                              "return_payment_method_id"]
  assert order["return_items"] is None
  products = json.loads(r.execute("list_all_product_types", {}).text)
  assert len(products) == 50 and list(products) == sorted(products)
  assert r.execute("calculate", {"expression": "2 * (3 + 0.5)"}).text == "7.0"
  assert to_json_str([1, {"a": 2.5}]) == '["1", {"a": "2.5"}]'  # tau2 stringifies scalars


def test_modify_items_last_variant_quirk(domains):
  """STATE_HASH.md: multi-item modifications give every item the LAST new variant's price."""
  d = domains["retail"]
  task = d.task("21")
  env = d.new_env(task)
  for a in task.gold_actions:
    out = env.execute(a.name, a.arguments)
    if a.name == "modify_pending_order_items":
      order = json.loads(out.text)
      new_ids = a.arguments["new_item_ids"]
  assert len(new_ids) > 1
  modified = [it for it in order["items"] if it["item_id"] in new_ids]
  assert len({it["price"] for it in modified}) == 1
  assert {json.dumps(it["options"], sort_keys=True) for it in modified} == \
      {json.dumps(modified[-1]["options"], sort_keys=True)}
  assert order["payment_history"][-1]["amount"] == 41.91999999999999


def test_load_errors_are_clear(tmp_path, tau2_data):
  with pytest.raises(ValueError, match="unknown domain 'telecom'"):
    load_domain("telecom", tau2_data)
  with pytest.raises(FileNotFoundError, match="tau2 domain folder not found"):
    load_domain("retail", tmp_path)
  folder = tmp_path / "domains" / "retail"
  folder.mkdir(parents=True)
  (folder / "policy.md").write_text("p")
  (folder / "tasks.json").write_text('[{"id": "x"}]')
  with pytest.raises(ValueError, match=r"task #0 \(id='x'\) is malformed"):
    load_domain("retail", tmp_path)
