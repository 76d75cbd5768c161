"""The benchmark runner: chat orchestrators against a fake endpoint, grading, resume, pinning."""

import asyncio
import json

import httpx
import pytest

from orchestra.envs.qa import EXACT, NUMERIC, QAItem
from orchestra.eval.orchestrators import ChatOrchestrator, Outcome
from orchestra.envs.qa_prompts import messages_for
from orchestra.eval.qa_run import regrade, run_items, select_items
from orchestra.eval.qa_settings import BenchmarkError, OrchestratorSpec, RunSettings
from orchestra.eval.qa_tools import build_tools, load_tool_config, simple_tool_specs
from orchestra.eval.results_store import ResultsStore, pin_run
from orchestra.eval.judge import ChatEndpoint, Judge
from orchestra.tools.base import Tool, ToolResult


class Lookup(Tool):
  """A deterministic stand-in for search: fixed cost and declared latency."""
  name = "lookup"
  description = "Look something up."
  parameters = {"type": "object", "required": ["query"], "additionalProperties": False,
                "properties": {"query": {"type": "string"}}}

  async def run(self, args):
    return ToolResult(text=f"Trundle is the capital of {args['query']}.", cost_usd=0.01,
                      latency_s=1.5)


def chat_body(content=None, tool_calls=None, prompt_tokens=100, completion_tokens=10):
  message = {"role": "assistant", "content": content}
  if tool_calls:
    message["tool_calls"] = tool_calls
  return {"choices": [{"index": 0, "message": message,
                       "finish_reason": "tool_calls" if tool_calls else "stop"}],
          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


def call(i, name, arguments):
  return {"id": f"call_{i}", "type": "function",
          "function": {"name": name, "arguments": arguments}}


class Scripted:
  """MockTransport handler replying with `bodies` in order and keeping every request."""

  def __init__(self, bodies):
    self.bodies, self.requests = list(bodies), []

  def __call__(self, request):
    self.requests.append(json.loads(request.content))
    return httpx.Response(200, json=self.bodies.pop(0))

  def endpoint(self):
    return ChatEndpoint("http://orchestrator.test/v1", "gpt-test", price_in_per_1m=1.0,
                        price_out_per_1m=10.0, transport=httpx.MockTransport(self))


ITEM = QAItem(id="v1", question="What is the capital of Veloria?", answer="Trundle",
              grader=EXACT, categories=("geo",))


def test_chat_orchestrator_runs_tools_until_answer():
  script = Scripted([
      chat_body("Let me look.", [call(1, "lookup", '{"query": "Veloria"}'),
                                 call(2, "lookup", '{"query": "again"}'),      # twice
                                 call(3, "lookup", "{not json"),
                                 call(4, "wiki", '{"q": "x"}')]),              # unknown
      chat_body(None, [call(5, "answer", '{"answer": "Trundle"}')], 300, 20),
  ])
  tools = build_tools([], with_answer=True)
  tools["lookup"] = Lookup()
  spec = OrchestratorSpec("chat", "http://orchestrator.test/v1", "gpt-test")
  orch = ChatOrchestrator(script.endpoint(), tools, spec, RunSettings(max_turns=5))
  out = asyncio.run(orch.solve(messages_for(ITEM, "chat"), seed=7))

  assert (out.answer, out.finish_reason, out.turns) == ("Trundle", "answer", 2)
  assert out.tool_calls == {"lookup": 1, "answer": 1} and out.format_errors == 3
  assert out.cost_usd == pytest.approx((100 * 1 + 10 * 10 + 300 * 1 + 20 * 10) / 1e6 + 0.01)
  assert out.latency_s >= 1.5 and out.error is None
  first, second = script.requests
  assert {t["function"]["name"] for t in first["tools"]} == {"lookup", "answer"}
  assert first["seed"] == 7 and first["max_completion_tokens"] == 2048
  tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
  assert [m["tool_call_id"] for m in tool_messages] == ["call_1", "call_2", "call_3", "call_4"]
  assert "Trundle is the capital of Veloria" in tool_messages[0]["content"]
  assert "called twice" in tool_messages[1]["content"]
  assert "not valid JSON" in tool_messages[2]["content"]
  assert "unknown tool 'wiki'" in tool_messages[3]["content"]


def test_no_tools_answers_in_one_call_and_endpoint_errors_are_kept():
  script = Scripted([chat_body("It is Trundle.\nAnswer: Trundle")])
  spec = OrchestratorSpec("no_tools", "http://orchestrator.test/v1", "gpt-test")
  orch = ChatOrchestrator(script.endpoint(), {}, spec, RunSettings())
  out = asyncio.run(orch.solve(messages_for(ITEM, "no_tools"), seed=0))
  assert out.finish_reason == "answer" and out.answer.endswith("Answer: Trundle")
  assert "tools" not in script.requests[0]
  assert "Answer: <final answer>" in script.requests[0]["messages"][-1]["content"]

  def down(request):
    return httpx.Response(500, text="boom")
  endpoint = ChatEndpoint("http://orchestrator.test/v1", "m", max_retries=0,
                          transport=httpx.MockTransport(down))
  out = asyncio.run(ChatOrchestrator(endpoint, {}, spec, RunSettings()).solve([], 0))
  assert out.finish_reason == "engine_error" and "HTTP 500" in out.error


class FakeOrchestrator:
  """Answers `answers[id]`; records which items it ran."""

  def __init__(self, answers, error_ids=()):
    self.answers, self.error_ids, self.ran = answers, set(error_ids), []

  async def solve(self, messages, seed):
    question = messages[-1]["content"].split("\n")[0]
    item_id = question.split()[-1].rstrip("?")
    self.ran.append(item_id)
    if item_id in self.error_ids:
      return Outcome(None, "engine_error", error="HTTP 503")
    return Outcome(self.answers[item_id], "answer", turns=1, tool_calls={"lookup": 1},
                   cost_usd=0.002, latency_s=1.0)


ITEMS = [QAItem(id=f"q{i}", question=f"What is item q{i}?", answer=str(i), grader=NUMERIC,
                categories=("math",)) for i in range(5)]


def test_run_items_resumes_and_retries_errors(tmp_path):
  store = ResultsStore(str(tmp_path))
  first = FakeOrchestrator({f"q{i}": f"Answer: {i if i != 1 else 9}" for i in range(5)},
                           error_ids={"q2"})
  counts = asyncio.run(run_items(ITEMS[:3], first, store, RunSettings(seed=10), kind="chat"))
  assert (counts.n_selected, counts.n_resumed, counts.n_ran) == (3, 0, 3)
  records = store.load()
  assert records["q0"]["correct"] and not records["q1"]["correct"]
  assert records["q2"]["status"] == "error" and records["q0"]["seed"] == 10
  assert records["q0"]["rule_grade"] == {"correct": True, "method": NUMERIC, "extracted": "0"}

  # A crash mid-write leaves a torn last line: it is dropped, and that item runs again.
  with open(store.path, "ab") as f:
    f.write(b'{"id": "q3", "status": "do')
  second = FakeOrchestrator({f"q{i}": f"Answer: {i}" for i in range(5)})
  counts = asyncio.run(run_items(ITEMS, second, store, RunSettings(), kind="chat"))
  assert sorted(second.ran) == ["q2", "q3", "q4"]          # done items are not run again
  assert (counts.n_resumed, counts.n_ran) == (2, 3)
  records = store.load()
  assert records["q2"]["status"] == "done" and records["q2"]["correct"]
  with open(store.path) as f:
    lines = f.read().splitlines()
  assert len(lines) == 6 and all(json.loads(line) for line in lines)

  with open(store.path, "a") as f:
    f.write("not json\n")
    f.write(json.dumps({"id": "q9"}) + "\n")
  with pytest.raises(BenchmarkError, match=r"results.jsonl, line 7: not a result record"):
    store.load()


def test_judge_grades_and_regrading_uses_its_cache(tmp_path):
  replies = {"Answer: 0": '{"extracted_final_answer": "0", "correct": "yes"}',
             "Answer: 1": "I cannot tell.",                               # judge error
             "Answer: 2": '{"extracted_final_answer": "2", "correct": "no"}'}
  calls = []

  def judge_server(request):
    body = json.loads(request.content)
    response = body["messages"][1]["content"].split("RESPONSE:\n")[1].split("\n")[0]
    calls.append(response)
    return httpx.Response(200, json=chat_body(replies[response], prompt_tokens=500,
                                              completion_tokens=50))

  def judge():
    endpoint = ChatEndpoint("http://judge.test/v1", "judge", price_in_per_1m=1.0,
                            transport=httpx.MockTransport(judge_server))
    return Judge(endpoint, str(tmp_path / "cache"))

  store = ResultsStore(str(tmp_path))
  orch = FakeOrchestrator({f"q{i}": f"Answer: {i}" for i in range(3)})
  asyncio.run(run_items(ITEMS[:3], orch, store, RunSettings(), kind="chat", judge=judge()))
  records = store.load()
  assert [records[f"q{i}"]["correct"] for i in range(3)] == [True, False, False]
  assert records["q1"]["judge_error"] and records["q1"]["judge"]["correct"] is None
  assert records["q2"]["rule_grade"]["correct"]            # rules say yes, the judge decides no
  assert records["q0"]["judge"]["cost_usd"] == pytest.approx(500 / 1e6)
  assert len(calls) == 3

  assert asyncio.run(regrade(ITEMS[:3], store, judge())) == 3
  assert len(calls) == 3                                   # every verdict came from the cache
  again = store.load()
  assert [again[f"q{i}"]["correct"] for i in range(3)] == [True, False, False]
  assert again["q0"]["judge"]["cached"] and again["q0"]["judge"]["cost_usd"] == 0.0


def test_pinned_setup_refuses_another_run(tmp_path):
  setup = {"benchmark": "jsonl", "data_sha256": "abc", "tools": ["answer"], "grader": "rules",
           "orchestrator": {"kind": "chat", "model": "m", "base_url": "http://a/v1"}}
  pin_run(str(tmp_path), setup)
  moved = {**setup, "orchestrator": {**setup["orchestrator"], "base_url": "http://b/v1"}}
  pin_run(str(tmp_path), moved)                            # same model on another port: fine
  with pytest.raises(BenchmarkError, match="another orchestrator.model"):
    pin_run(str(tmp_path), {**setup, "orchestrator": {**setup["orchestrator"], "model": "x"}})
  with pytest.raises(BenchmarkError, match="another data_sha256"):
    pin_run(str(tmp_path), {**setup, "data_sha256": "def"})
  pin_run(str(tmp_path), {**setup, "grader": "judge:j"}, ignore=("grader",))


def test_item_selection_and_tool_settings(tmp_path):
  assert [i.id for i in select_items(ITEMS, 2)] == ["q0", "q1"]
  sample = select_items(ITEMS, 3, sample_seed=1)
  assert len(sample) == 3 and sample == sorted(sample, key=ITEMS.index)
  assert select_items(ITEMS, 3, sample_seed=1) == sample and select_items(ITEMS, 0) == ITEMS
  with pytest.raises(BenchmarkError, match="--limit=-1"):
    select_items(ITEMS, -1)

  with pytest.raises(BenchmarkError, match="needs --index_dir"):
    simple_tool_specs(["local_search"])
  with pytest.raises(BenchmarkError, match="unknown tool 'grep'"):
    simple_tool_specs(["grep"])
  config = tmp_path / "tools.json"
  config.write_text('{"tools": [{"type": "code_interpreter"},\n {"name": "x"}]}')
  with pytest.raises(BenchmarkError, match=r"tools\[1\] must be an object with a \"type\""):
    load_tool_config(str(config))
  config.write_text('{"tools": [\n{"type": "code_interpreter",}]}')
  with pytest.raises(BenchmarkError, match="tools.json, line 2: invalid JSON"):
    load_tool_config(str(config))
  with pytest.raises(BenchmarkError, match="a second tool named 'code_interpreter'"):
    build_tools([{"type": "code_interpreter"}, {"type": "code_interpreter"}])
  with pytest.raises(BenchmarkError, match=r"tools\[0\] \(local_search\): .*holds no search index"):
    build_tools([{"type": "local_search", "index_dir": str(tmp_path)}])
