"""The LLM generator against a local stub of an OpenAI-compatible server that replays recorded
replies per stage and domain: malformed JSON, a tool spec naming a missing field, a failing
gold action, a malformed and a duplicate task are each dropped with their reason, a bad
reply is re-asked, the rest is written, and the cost is reported."""

import copy
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestra.envs.domains import load_domain
from orchestra.synth.llm_generator import parse_reply
from orchestra.synth.procedural import (make_database, make_policy, make_schema, make_tasks,
                                        make_tools)

ROOT = Path(__file__).resolve().parents[2]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500}
STAGE_RE = re.compile(r"You are generating the (\w+) of")
DOMAIN_RE = re.compile(r"Domain: (\w+)")


class Stub:
  """Replies per (stage, domain) in order; records every prompt it was sent."""

  def __init__(self, replies: dict):
    self.replies = {k: list(v) for k, v in replies.items()}
    self.prompts: list[tuple[str, str | None, int]] = []
    self.lock = threading.Lock()

  def reply(self, messages: list[dict]) -> str:
    first = messages[0]["content"]
    stage = STAGE_RE.search(first).group(1)
    domain = DOMAIN_RE.search(first)
    key = (stage, domain.group(1) if domain else None)
    with self.lock:
      self.prompts.append((*key, len(messages)))
      return self.replies[key].pop(0)


def serve(stub: Stub):
  class Handler(BaseHTTPRequestHandler):
    def do_POST(self):                      # noqa: N802 (http.server's name)
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      content = stub.reply(body["messages"])
      data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}], "usage": USAGE}).encode()
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):
      pass

  server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def recorded_clinic():
  """A good domain's replies (made by the procedural templates, as a model would send
  them), with the task batch holding one malformed draft, a duplicate and a failing one."""
  idea = {"name": "clinic", "description": "A clinic.", "theme": "clinic_scheduling"}
  schema = make_schema(0, idea)
  db = make_database(0, idea, schema)
  tools = make_tools(0, idea, schema)
  drafts = make_tasks(0, idea, schema, db, tools, 30)
  by_actions = {json.dumps(d["actions"], sort_keys=True): d for d in reversed(drafts)}
  good = list(by_actions.values())[:3]
  failing = copy.deepcopy(good[0])
  failing["actions"][-1]["arguments"] = {"wrong_argument": "x"}
  malformed = {k: v for k, v in good[1].items() if k != "actions"}
  tasks = [good[0], malformed, good[0], failing, good[1], good[2]]
  return {("schema", "clinic"): [json.dumps(schema)],
          ("database", "clinic"): ["```json\n" + json.dumps(db) + "\n```"],
          ("tools", "clinic"): [json.dumps({"tools": tools})],
          ("policy", "clinic"): [json.dumps({"policy": make_policy(0, idea, tools)})],
          ("tasks", "clinic"): [json.dumps({"tasks": tasks})]}, schema, tools


@pytest.fixture
def stub():
  replies, schema, tools = recorded_clinic()
  bad_tools = copy.deepcopy(tools)
  bad_tools[2]["returns"] = {"row": "resource", "field": "bedside_manner"}
  replies.update({
      ("domains", None): [json.dumps({"domains": [
          {"name": "clinic", "description": "A clinic."},
          {"name": "zoo", "description": "A zoo."},
          {"name": "farm", "description": "A farm."},
          {"name": "Bad Name!", "description": "x"}]})],
      ("schema", "zoo"): ['{"tables": {"animals": ', '{"tables": oops'],   # malformed twice
      ("schema", "farm"): ["no json here", json.dumps(schema)],           # re-asked once
      ("database", "farm"): [json.dumps(make_database(0, {"name": "farm", "theme":
                                                           "clinic_scheduling"}, schema))],
      ("tools", "farm"): [json.dumps({"tools": bad_tools})],
  })
  stub = Stub(replies)
  server = serve(stub)
  stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  yield stub
  server.shutdown()


def synthesize(url, out, *extra):
  return subprocess.run(
      [sys.executable, str(ROOT / "launch" / "synthesize.py"),
       f"--config={ROOT / 'configs' / 'synth_llm.py'}", f"--out={out}",
       f"--config.llm.url={url}", "--config.llm.model=stub", "--config.llm.retries=1",
       "--config.llm.price_in=1.0", "--config.llm.price_out=2.0", "--config.num_domains=4",
       "--config.tasks_per_domain=3", "--config.oversample=2", *extra],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_bad_replies_are_dropped_with_their_reason_and_the_rest_is_written(tmp_path, stub):
  out = synthesize(stub.url, tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["domains"] == {"proposed": 3, "kept": 1}
  assert report["drops"] == {
      "domains": {"invalid_name": 1},
      "schema": {"malformed_json": 1},
      "tools": {"invalid_tools": 1},
      "task_verification": {"duplicate": 1, "gold_action_failed": 1, "malformed_task": 1}}
  assert report["tasks"] == {"proposed": 6, "examined": 6, "kept": 3}
  requests = 1 + 2 + (2 + 1 + 1) + (1 + 1 + 1 + 1 + 1)   # domains, zoo, farm, clinic
  assert report["llm"]["requests"] == requests == len(stub.prompts)
  assert report["llm"]["cost_usd"] == pytest.approx(requests * (1000 * 1.0 + 500 * 2.0) / 1e6)
  assert ("schema", "farm", 3) in stub.prompts            # the re-ask carries the bad reply
  assert sorted(p.name for p in (tmp_path / "domains").iterdir()) == ["clinic"]
  domain = load_domain("clinic", str(tmp_path))
  assert len(domain.tasks) == 3
  stages = json.loads((tmp_path / "work" / "farm" / "tools.json").read_text())
  assert "has no field 'bedside_manner'" in stages["drop"]["detail"]
  assert "drop" not in json.loads((tmp_path / "work" / "farm" / "schema.json").read_text())
  # a rerun reads every stage back: no request reaches the stub
  again = synthesize(stub.url, tmp_path)
  assert again.returncode == 0 and len(stub.prompts) == requests
  assert json.loads((tmp_path / "report.json").read_text()) == report


def test_a_dead_endpoint_is_a_named_drop_not_a_crash(tmp_path):
  out = synthesize("http://127.0.0.1:9/v1", tmp_path, "--config.llm.retries=0")
  assert out.returncode != 0
  assert "endpoint_error" in out.stderr and "127.0.0.1:9" in out.stderr
  assert "Traceback" not in out.stderr


def test_a_missing_endpoint_setting_is_named():
  out = subprocess.run([sys.executable, str(ROOT / "launch" / "synthesize.py"),
                        f"--config={ROOT / 'configs' / 'synth_llm.py'}", "--out=/tmp/x"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
  assert out.returncode != 0 and "config.llm.url and config.llm.model are required" in out.stderr


def test_parse_reply_takes_bare_or_fenced_json():
  assert parse_reply('{"a": 1}') == parse_reply('```json\n{"a": 1}\n```') == {"a": 1}
  with pytest.raises(ValueError):
    parse_reply("here you go: {")
  with pytest.raises(ValueError, match=r"repeated keys \['p1'\]"):
    parse_reply('{"people": {"p1": {"name": "A"}, "p1": {"name": "B"}}}')
