"""tau2 evaluator: pass^k, reward product, communicate/action/NL checks, scripted episodes."""

import asyncio
import json

import httpx
import pytest

from orchestra.envs.domains.base import Action
from orchestra.envs.domains.conversation import (STOP, LLMUser, ScriptedAgent, ScriptedUser,
                                                 run_conversation, scenario_text)
from orchestra.envs.domains.evaluate import (action_matches, check_communicate,
                                             evaluate_episode, is_success, pass_hat_k)
from orchestra.eval.judge import ChatEndpoint, Judge
from orchestra.eval.tau2_judge import make_nl_judge, parse_nl_results


def run(coro):
  return asyncio.run(coro)


def test_pass_hat_k_hand_computed():
  # task a: 4 trials, 3 successes; task b: 4 trials, 1 success; c: 4 trials, 0 successes.
  rewards = {"a": [1.0, 1.0, 0.0, 1.0], "b": [0.0, 1.0, 0.0, 0.0], "c": [0.0] * 4}
  # k=1: (3/4 + 1/4 + 0)/3 = 1/3
  assert pass_hat_k(rewards, 1) == pytest.approx(1 / 3)
  # k=2: (C(3,2)/C(4,2) + 0 + 0)/3 = (3/6)/3 = 1/6
  assert pass_hat_k(rewards, 2) == pytest.approx(1 / 6)
  # k=3: (C(3,3)/C(4,3))/3 = (1/4)/3 = 1/12 ; k=4: 0
  assert pass_hat_k(rewards, 3) == pytest.approx(1 / 12)
  assert pass_hat_k(rewards, 4) == 0.0
  assert pass_hat_k({"x": [1.0 - 1e-9, 1.0]}, 2) == 1.0  # success within 1e-6 of 1
  assert not is_success(0.999) and not is_success(None)
  with pytest.raises(ValueError, match="fewer than k=5"):
    pass_hat_k(rewards, 5)


def test_action_matching_follows_tau2():
  a = Action(action_id="x", name="get_order_details", arguments={"order_id": "#W1"})
  assert action_matches(a, "get_order_details", {"order_id": "#W1"})
  assert not action_matches(a, "get_order_details", {"order_id": "#W2"})
  assert not action_matches(a, "get_user_details", {"order_id": "#W1"})
  # compare_args None: the predicted call's keys are compared (an extra key must match too)
  assert not action_matches(a, "get_order_details", {"order_id": "#W1", "x": 1})
  b = Action(action_id="y", name="cancel_pending_order",
             arguments={"order_id": "#W1", "reason": "no longer needed"}, compare_args=["order_id"])
  assert action_matches(b, "cancel_pending_order", {"order_id": "#W1", "reason": "other"})


def test_communicate_check_is_case_and_comma_insensitive():
  assert check_communicate(["1628"], ["The refund is $1,628 in total."]) == [True]
  assert check_communicate(["Free"], ["it is free"]) == [True]
  assert check_communicate(["327"], ["It is 3 2 7"]) == [False]


def _gold_episode(domain, task):
  return run(run_conversation(domain, task, ScriptedAgent.from_gold(task),
                              ScriptedUser(["I want to update my address."])))


def test_scripted_gold_agent_scores_1_on_a_db_only_task(domains):
  d = domains["retail"]
  task = d.task("33")
  assert list(task.evaluation_criteria.reward_basis) == ["DB"]
  ep = _gold_episode(d, task)
  assert ep.termination == "user_stop"
  assert [c["name"] for c in ep.tool_calls] == [a.name for a in task.gold_actions]
  info = run(evaluate_episode(d, task, termination=ep.termination, tool_calls=ep.tool_calls,
                              messages=ep.messages))
  assert info.reward == 1.0 and info.breakdown == {"DB": 1.0}
  assert info.details["db"]["gold_hash"] == ep.final_db_hash
  # the same calls minus the write: the DB differs, reward 0
  reads = [c for c in ep.tool_calls if c["name"] != "modify_user_address"]
  bad = run(evaluate_episode(d, task, termination="user_stop", tool_calls=reads,
                             messages=ep.messages))
  assert bad.reward == 0.0 and bad.breakdown == {"DB": 0.0}
  # a premature end scores 0 whatever the state
  cut = run(evaluate_episode(d, task, termination="max_steps", tool_calls=ep.tool_calls,
                             messages=ep.messages))
  assert cut.reward == 0.0


def test_reward_is_the_product_over_the_basis(domains):
  d = domains["airline"]
  task = d.task("7")  # DB + COMMUNICATE, must communicate "1628"
  assert task.evaluation_criteria.communicate_info == ["1628"]
  calls = [{"name": a.name, "arguments": a.arguments} for a in task.gold_actions]
  silent = [{"role": "assistant", "content": "Done."}]
  told = [{"role": "assistant", "content": "Your refund totals $1,628."}]
  r1 = run(evaluate_episode(d, task, termination="agent_stop", tool_calls=calls,
                            messages=silent))
  r2 = run(evaluate_episode(d, task, termination="agent_stop", tool_calls=calls, messages=told))
  assert r1.breakdown == {"DB": 1.0, "COMMUNICATE": 0.0} and r1.reward == 0.0
  assert r2.breakdown == {"DB": 1.0, "COMMUNICATE": 1.0} and r2.reward == 1.0


def test_gold_replay_that_raised_cannot_certify_a_match(domains):
  """Retail 64: a mutating gold action raises; a match is 'not evaluated' (None), as tau2."""
  d = domains["retail"]
  task = d.task("64")
  calls = [{"name": a.name, "arguments": a.arguments} for a in task.gold_actions]
  info = run(evaluate_episode(d, task, termination="user_stop", tool_calls=calls, messages=[]))
  assert info.details["db"]["match"] is True and info.breakdown["DB"] is None
  assert info.details["db"]["failed_gold_actions"][0]["tool_name"] == \
      "exchange_delivered_order_items"


def _mock_judge(tmp_path, replies):
  seen = []

  def handler(request):
    body = json.loads(request.content)
    seen.append(body)
    text = replies.pop(0)
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant",
                                                              "content": text},
                                                  "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 1000, "completion_tokens": 10}})

  ep = ChatEndpoint("http://judge.test/v1", "judge", price_in_per_1m=1.0,
                    transport=httpx.MockTransport(handler))
  return Judge(ep, str(tmp_path / "cache")), seen


def test_nl_assertions_through_the_llm_judge(domains, tmp_path):
  d = domains["retail"]
  task = next(t for t in d.tasks if t.evaluation_criteria.nl_assertions
              and list(t.evaluation_criteria.reward_basis) == ["DB", "NL_ASSERTION"])
  n = len(task.evaluation_criteria.nl_assertions)
  good = json.dumps({"results": [{"expectedOutcome": a, "reasoning": "ok",
                                  "metExpectation": True}
                                 for a in task.evaluation_criteria.nl_assertions]})
  partly = json.dumps({"results": [{"metExpectation": i > 0} for i in range(n)]})
  judge, seen = _mock_judge(tmp_path, [good, partly, "no json here"])
  nl = make_nl_judge(judge)
  calls = [{"name": a.name, "arguments": a.arguments} for a in task.gold_actions]

  def grade(text):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}]
    return run(evaluate_episode(d, task, termination="user_stop", tool_calls=calls,
                                messages=msgs, nl_judge=nl))

  ok = grade("answer one")
  assert ok.breakdown["NL_ASSERTION"] == 1.0 and ok.reward == ok.breakdown["DB"]
  assert ok.judge_cost_usd == pytest.approx(1000 / 1e6)
  assert "answer one" in seen[0]["messages"][1]["content"]
  assert task.evaluation_criteria.nl_assertions[0] in seen[0]["messages"][1]["content"]
  assert grade("answer two").breakdown["NL_ASSERTION"] == 0.0
  broken = grade("answer three")
  assert broken.breakdown["NL_ASSERTION"] == 0.0 and broken.reward == 0.0
  assert "judge error" in broken.details["nl_assertions"]["note"]
  again = grade("answer one")  # cached: no request, no cost
  assert again.breakdown["NL_ASSERTION"] == 1.0 and again.judge_cost_usd == 0.0
  assert len(seen) == 3
  no_judge = run(evaluate_episode(d, task, termination="user_stop", tool_calls=calls,
                                  messages=[]))
  assert no_judge.breakdown["NL_ASSERTION"] is None
  assert parse_nl_results({"results": [{"metExpectation": "yes"}]}, 1) == ([True], "")


def test_episode_termination_and_accounting(domains):
  d = domains["retail"]
  task = d.task("33")

  class Looping:
    """Always calls a tool: the episode must be cut at max_steps."""
    async def respond(self, system, history, tools):
      from orchestra.envs.domains.conversation import Reply
      return Reply("", [{"id": "c", "name": "calculate", "arguments": {"expression": "1+1"}}],
                   prompt_tokens=10, completion_tokens=2, cost_usd=0.5, latency_s=0.25)

  ep = run(run_conversation(d, task, Looping(), ScriptedUser(["hello"]), max_steps=9))
  assert ep.termination == "max_steps" and ep.steps == 9
  # greeting, user, (agent call + its tool results) x 3, one more agent call (not run) = 9
  assert ep.agent_prompt_tokens == 40 and ep.agent_cost_usd == pytest.approx(2.0)
  assert ep.cost_usd == pytest.approx(2.0) and ep.latency_s >= 1.0
  assert all(c["output"] == "2.0" for c in ep.tool_calls)

  class Erring(Looping):
    async def respond(self, system, history, tools):
      r = await super().respond(system, history, tools)
      r.tool_calls[0]["name"] = "nope"
      return r

  ep = run(run_conversation(d, task, Erring(), ScriptedUser(["hello"]), max_errors=2))
  assert ep.termination == "too_many_errors" and len(ep.tool_calls) == 3
  assert ep.tool_calls[0]["output"] == "Error: Tool 'nope' not found."

  ep = run(run_conversation(d, task, ScriptedAgent([], final_message=f"bye {STOP}"),
                            ScriptedUser(["hello"])))
  assert ep.termination == "agent_stop"
  assert [m["role"] for m in ep.messages] == ["assistant", "user", "assistant"]

  class Broken:
    async def respond(self, *a):
      raise ConnectionError("down")

  ep = run(run_conversation(d, task, Broken(), ScriptedUser(["hello"])))
  assert ep.termination == "agent_error" and "down" in ep.error


def test_user_simulator_prompt_and_role_flip(domains, tmp_path, tau2_data):
  d = domains["retail"]
  task = d.task("0")
  seen = []

  class Model:
    async def chat(self, messages, tools=None, max_tokens=None, temperature=None):
      seen.append(messages)
      from orchestra.eval.judge import ChatReply
      return ChatReply({}, "Sure. ###TRANSFER###", [], "stop", 5, 3, 0.01, 0.1)

  guidelines = (tau2_data / "user_simulator" / "simulation_guidelines.md").read_text()
  ep = run(run_conversation(d, task, ScriptedAgent([]), LLMUser(Model(), guidelines)))
  assert ep.termination == "user_stop" and ep.user_cost_usd == pytest.approx(0.01)
  system, first = seen[0][0]["content"], seen[0][1]
  assert system.startswith("# User Simulation Guidelines") and "<scenario>" in system
  assert scenario_text(task) in system and "You are Yusuf Rossi in zip code 19122." in system
  assert first == {"role": "user", "content": "Hi! How can I help you today?"}


def test_llm_agent_with_call_expert_tool(domains):
  """The agent sees domain tools + call_expert; expert cost/latency count as the agent's."""
  from orchestra.envs.domains.conversation import LLMAgent
  from orchestra.eval.judge import ChatReply
  from orchestra.tools.base import Tool, ToolResult

  class Expert(Tool):
    name, description = "call_expert", "Ask an expert."
    parameters = {"type": "object", "properties": {"prompt": {"type": "string"}},
                  "required": ["prompt"]}

    async def run(self, args):
      return ToolResult(text=f"expert says: {args['prompt']}", cost_usd=0.25, latency_s=1.5)

  seen = []
  script = [
      ChatReply({}, "", [{"id": "a", "type": "function", "function": {
          "name": "call_expert", "arguments": '{"prompt": "what now?"}'}}], "tool_calls",
                100, 5, 0.001, 0.5),
      ChatReply({}, "", [{"id": "b", "type": "function", "function": {
          "name": "get_user_details", "arguments": "{not json"}}], "tool_calls",
                100, 5, 0.001, 0.5),
      ChatReply({}, f"All done. {STOP}", [], "stop", 100, 5, 0.001, 0.5),
  ]

  class Model:
    async def chat(self, messages, tools=None, max_tokens=None, temperature=None):
      seen.append((messages, tools))
      return script.pop(0)

  d = domains["retail"]
  task = d.task("33")
  ep = run(run_conversation(d, task, LLMAgent(Model()), ScriptedUser(["hi"]),
                            extra_tools=[Expert()]))
  assert ep.termination == "agent_stop"
  names = [t["function"]["name"] for t in seen[0][1]]
  assert names[:-1] == d.toolkit_cls.tool_names() and names[-1] == "call_expert"
  assert seen[0][0][0]["role"] == "system" and d.policy in seen[0][0][0]["content"]
  assert ep.tool_calls[0]["output"] == "expert says: what now?"
  assert ep.tool_calls[1]["error"] and "not a JSON object" in ep.tool_calls[1]["output"]
  assert seen[2][0][-1] == {"role": "tool", "tool_call_id": "b", "name": "get_user_details",
                            "content": ep.tool_calls[1]["output"]}
  assert ep.expert_cost_usd == 0.25 and ep.cost_usd == pytest.approx(0.253)
  assert ep.latency_s >= 1.5 + 1.5
  with pytest.raises(ValueError, match="clash"):
    Expert.name = "calculate"
    try:
      run(run_conversation(d, task, LLMAgent(Model()), ScriptedUser(), extra_tools=[Expert()]))
    finally:
      Expert.name = "call_expert"
