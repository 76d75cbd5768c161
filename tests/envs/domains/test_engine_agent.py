"""EngineAgent: the policy's token sequence in a tau2 conversation (on a toy ToolScale domain)."""

import asyncio

import numpy as np
import pytest
from flax import nnx
from reference_logprobs import forward_logprobs
from tokenizer_fixture import make_tokenizer
from toy_domain import POLICY, write_data

from orchestra.agent.chat_format import IM_END, render_prompt, tool_call_text
from orchestra.agent.episode import EpisodeConfig, ScriptedEngine
from orchestra.engines import JaxEngine, SamplingParams
from orchestra.envs.domains import load_domain
from orchestra.envs.domains.conversation import (FIRST_AGENT_MESSAGE, TicketUser,
                                                 agent_system_prompt, run_conversation,
                                                 ticket_text)
from orchestra.envs.domains.engine_agent import EngineAgent
from orchestra.envs.domains.evaluate import evaluate_episode
from orchestra.models import CausalLM, DecoderConfig


@pytest.fixture(scope="module")
def tokenizer():
  return make_tokenizer()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
  return load_domain("toy_domain", write_data(tmp_path_factory.mktemp("library")))


def converse(domain, task, agent, **kwargs):
  return asyncio.run(run_conversation(domain, task, agent, TicketUser(), **kwargs))


def test_a_custom_domain_loads_by_module_path(library):
  assert library.name == "library" and len(library.split("train")) == 4
  assert [s["function"]["name"] for s in library.tool_schemas()] == ["find_book", "lend_book"]
  with pytest.raises(ValueError, match="no module no_such_pkg.domain"):
    load_domain("no_such_pkg.domain", ".")
  with pytest.raises(ValueError, match="has no build_domain"):
    load_domain("tokenizer_fixture", ".")


def test_tokens_are_the_rendered_conversation_and_the_mask_is_the_agent(library, tokenizer):
  task = library.task("0")
  turns = [("find_book", {"title": "Dune"}), ("lend_book", {"member_id": "m1", "book_id": "b1"}),
           "Lent: b1."]
  agent = EngineAgent(ScriptedEngine(tokenizer, turns), tokenizer, SamplingParams())
  episode = converse(library, task, agent)
  assert episode.termination == "user_stop"
  info = asyncio.run(evaluate_episode(library, task, termination=episode.termination,
                                      tool_calls=episode.tool_calls, messages=episode.messages))
  assert info.reward == 1.0
  traj = agent.finish(episode)
  assert traj.finish_reason == "user_stop" and traj.tool_calls == {"find_book": 1, "lend_book": 1}

  member = episode.tool_calls[1]["output"]
  messages = [
      {"role": "system", "content": agent_system_prompt(POLICY)},
      {"role": "assistant", "content": FIRST_AGENT_MESSAGE},
      {"role": "user", "content": ticket_text(task)},
      {"role": "assistant", "content": "", "tool_calls": [
          {"function": {"name": "find_book", "arguments": {"title": "Dune"}}}]},
      {"role": "tool", "content": "b1"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"function": {"name": "lend_book", "arguments": {"member_id": "m1", "book_id": "b1"}}}]},
      {"role": "tool", "content": member},
      {"role": "assistant", "content": "Lent: b1."}]
  expected = render_prompt(messages, library.tool_schemas(), add_generation_prompt=False)
  assert tokenizer.decode(traj.token_ids, skip_special_tokens=False) + "\n" == expected
  mask = np.asarray(traj.loss_mask, bool)
  policy_text = tokenizer.decode(np.asarray(traj.token_ids)[mask], skip_special_tokens=False)
  assert policy_text == "".join(
      [tool_call_text("find_book", {"title": "Dune"}) + IM_END,
       tool_call_text("lend_book", {"member_id": "m1", "book_id": "b1"}) + IM_END,
       "Lent: b1." + IM_END])
  assert traj.prompt_length == len(tokenizer(render_prompt(messages[:3], library.tool_schemas()),
                                             add_special_tokens=False)["input_ids"])


def test_malformed_calls_never_reach_the_environment(library, tokenizer):
  turns = ['<tool_call>\n{"name": "lend_book", "arguments": {broken\n</tool_call>',
           ("find_book", {"title": "Dune"}), "b1"]
  agent = EngineAgent(ScriptedEngine(tokenizer, turns), tokenizer, SamplingParams())
  episode = converse(library, library.task("0"), agent)
  traj = agent.finish(episode)
  assert [c["name"] for c in episode.tool_calls] == ["find_book"]
  assert len(traj.turns) == 3 and not traj.format_ok
  assert "invalid JSON" in traj.turns[0].observation
  assert "Format error: tool call 1: invalid JSON" in tokenizer.decode(traj.token_ids)


def test_turn_and_token_limits_end_the_episode(library, tokenizer):
  turns = [("find_book", {"title": "Dune"})] * 3 + ["done"]
  agent = EngineAgent(ScriptedEngine(tokenizer, turns), tokenizer, SamplingParams(),
                      EpisodeConfig(max_turns=2, price_out_per_1m=1e6,
                                    generation_latency_per_token_s=0.01))
  episode = converse(library, library.task("0"), agent)
  traj = agent.finish(episode)
  assert episode.termination == "agent_error" and "2 turns" in episode.error
  assert traj.finish_reason == "max_turns" and len(traj.turns) == 2
  # every policy turn is billed, though the episode ended in the agent's error: $1/token out
  assert traj.cost_usd == pytest.approx(sum(traj.loss_mask))
  assert traj.latency_s == pytest.approx(0.01 * sum(traj.loss_mask) + episode.tool_latency_s)

  agent = EngineAgent(ScriptedEngine(tokenizer, turns), tokenizer, SamplingParams(),
                      EpisodeConfig(max_total_tokens=10))
  episode = converse(library, library.task("0"), agent)
  assert agent.finish(episode).finish_reason == "max_tokens"


def test_long_tool_results_are_cut_for_the_policy_only(library, tokenizer):
  turns = [("lend_book", {"member_id": "m1", "book_id": "b1"}), "ok"]
  agent = EngineAgent(ScriptedEngine(tokenizer, turns), tokenizer, SamplingParams(),
                      EpisodeConfig(max_observation_tokens=4))
  episode = converse(library, library.task("0"), agent)
  assert '"loans": ["b1"]' in episode.tool_calls[0]["output"]          # the record is whole
  assert "[... cut" in tokenizer.decode(agent.trajectory.token_ids)    # what the policy read


def test_user_failure_before_the_first_turn_gives_an_empty_trajectory(library, tokenizer):
  class DeadUser:
    async def respond(self, task, conversation):
      raise ConnectionError("user simulator down")

  agent = EngineAgent(ScriptedEngine(tokenizer, []), tokenizer, SamplingParams())
  episode = asyncio.run(run_conversation(library, library.task("0"), agent, DeadUser()))
  traj = agent.finish(episode)
  assert episode.termination == "user_error" and traj.token_ids == [] and traj.format_ok
  assert "user simulator down" in traj.error


def test_sampled_turns_keep_the_samplers_logprobs_aligned(library, tokenizer):
  """The learner scores exactly what the sampler produced, through tool results and users."""
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True,
                      eos_token_id=tokenizer.convert_tokens_to_ids(IM_END))
  model = CausalLM(cfg, rngs=nnx.Rngs(0))

  scripted = ScriptedEngine(tokenizer, [("find_book", {"title": "Emma"})])
  sampler = JaxEngine(model)

  class FirstScriptedThenSampled:
    async def generate(self, ids, sampling):
      return await (scripted if scripted.turns else sampler).generate(ids, sampling)

  agent = EngineAgent(FirstScriptedThenSampled(), tokenizer, SamplingParams(max_tokens=12, seed=3),
                      EpisodeConfig(max_turns=4))
  converse(library, library.task("1"), agent)
  traj = agent.trajectory
  first_turn = len(tokenizer(tool_call_text("find_book", {"title": "Emma"}) + IM_END,
                             add_special_tokens=False)["input_ids"])
  sampled = np.asarray(traj.loss_mask, bool)
  sampled[:traj.prompt_length + first_turn] = False
  assert len(traj.turns) >= 2 and sampled.sum() >= 3
  ref = forward_logprobs(model, [traj.token_ids])[0]
  np.testing.assert_allclose(np.asarray(traj.behaviour_logprobs)[sampled], ref[sampled],
                             atol=1e-4)


@pytest.mark.parametrize("calls, met", [
    ([("lend_book", {"member_id": "m3", "book_id": "b2"})], [True, True]),
    ([("lend_book", {"member_id": "m1", "book_id": "b2"})], [False, False]),
    ([], [False, True]),
])
def test_env_assertions_grade_the_final_state(library, calls, met):
  """Task 6: m3 must hold b2 (assert_value True) and m1 must not (assert_value False)."""
  episode_calls = [{"name": n, "arguments": a} for n, a in calls]
  info = asyncio.run(evaluate_episode(library, library.task("6"), termination="agent_stop",
                                      tool_calls=episode_calls, messages=[]))
  assert [c["met"] for c in info.details["env_assertions"]] == met
  assert info.breakdown == {"ENV_ASSERTION": float(all(met))} and info.reward == float(all(met))
