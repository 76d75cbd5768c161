"""Episodes: scripted policy accounting, random-model robustness, concurrency."""

import asyncio

import numpy as np
import pytest
from flax import nnx
from tokenizer_fixture import make_tokenizer

from orchestra.agent.chat_format import IM_END, observation_text, render_prompt
from orchestra.agent.episode import EpisodeConfig, run_episode, run_episodes
from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.engines.jax_engine import JaxEngine
from orchestra.models import CausalLM, DecoderConfig
from orchestra.tools import build_tool
from orchestra.tools.base import Tool, ToolResult

MESSAGES = [{"role": "system", "content": "You are good at using tools."},
            {"role": "user", "content": "What is 17 * 3?"}]


@pytest.fixture(scope="module")
def tokenizer():
  return make_tokenizer()


class ScriptedEngine:
  """Replays fixed policy turns (as tokens), recording the prompts it was given."""

  def __init__(self, tokenizer, turns, weight_version=3):
    self.tokenizer, self.weight_version = tokenizer, weight_version
    self.turns, self.prompts = list(turns), []

  async def generate(self, prompt_ids, sampling):
    self.prompts.append(list(prompt_ids))
    ids = self.tokenizer(self.turns.pop(0), add_special_tokens=False)["input_ids"]
    return Completion(ids, [-0.5] * len(ids), "stop", self.weight_version)


def call(name, args):
  import json
  return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>{IM_END}'


@pytest.fixture
def search_tool(tmp_path):
  import json
  from orchestra.tools.embedders import HashingEmbedder
  from orchestra.tools.local_search import build_index
  corpus = tmp_path / "kb.jsonl"
  docs = [{"id": 1, "title": "Veloria", "text": "Veloria has 17 provinces. Its capital is Trundle."},
          {"id": 2, "title": "Quillon", "text": "Quillon is a river with 4 bridges."}]
  corpus.write_text("\n".join(json.dumps(d) for d in docs))
  build_index(str(corpus), str(tmp_path / "index"), HashingEmbedder(dim=256))
  return build_tool({"type": "local_search", "index_dir": str(tmp_path / "index"), "top_k": 1})


def test_scripted_episode_accounting(tokenizer, search_tool):
  """local_search -> code_interpreter -> answer, with exact tokens, masks and accounting."""
  tools = {"local_search": search_tool,
           "code_interpreter": build_tool({"type": "code_interpreter", "timeout_s": 10}),
           "answer": build_tool({"type": "answer"})}
  turns = ["Look it up." + call("local_search", {"query": "How many provinces has Veloria?"}),
           call("code_interpreter", {"code": "print(17 * 3)"}),
           call("answer", {"answer": "51"})]
  engine = ScriptedEngine(tokenizer, turns)
  traj = asyncio.run(run_episode(engine, tokenizer, tools, MESSAGES, SamplingParams(),
                                 EpisodeConfig(price_in_per_1m=1.0, price_out_per_1m=2.0)))
  assert traj.finish_reason == "answer" and traj.answer == "51" and traj.format_ok
  assert [t.calls[0]["name"] for t in traj.turns] == ["local_search", "code_interpreter", "answer"]
  assert traj.tool_calls == {"local_search": 1, "code_interpreter": 1, "answer": 1}
  assert "Veloria has 17 provinces" in traj.turns[0].observation
  assert "51" in traj.turns[1].observation and traj.turns[2].observation == ""
  # The token sequence is prompt + turn + observation + turn + observation + turn: appended only.
  enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]
  prompt = enc(render_prompt(MESSAGES, [t.schema() for t in tools.values()]))
  pieces = [(prompt, 0), (enc(turns[0]), 1), (enc(observation_text(traj.turns[0].observation)), 0),
            (enc(turns[1]), 1), (enc(observation_text(traj.turns[1].observation)), 0),
            (enc(turns[2]), 1)]
  expected = [t for ids, _ in pieces for t in ids]
  assert traj.token_ids == expected and traj.prompt_length == len(prompt)
  assert [len(p) for p in engine.prompts] == [len(prompt), sum(len(i) for i, _ in pieces[:3]),
                                              sum(len(i) for i, _ in pieces[:5])]
  assert all(expected[:len(p)] == p for p in engine.prompts)
  np.testing.assert_array_equal(traj.loss_mask, [m for ids, m in pieces for _ in ids])
  logps = np.asarray(traj.behaviour_logprobs)
  assert (logps[np.asarray(traj.loss_mask) == 1] == -0.5).all()
  assert (logps[np.asarray(traj.loss_mask) == 0] == 0).all()
  assert traj.weight_versions == [3, 3, 3]
  # Cost: each turn pays the orchestrator's tokens ($1/1M in over the context it was given,
  # $2/1M out) plus its tool; search charges per query token, the interpreter per second.
  context = [sum(len(i) for i, _ in pieces[:k + 1]) for k in (0, 2, 4)]
  out_tokens = [len(pieces[k][0]) for k in (1, 3, 5)]
  for turn, ctx, out in zip(traj.turns, context, out_tokens, strict=True):
    assert turn.cost_usd >= (ctx * 1.0 + out * 2.0) / 1e6 - 1e-12
  assert traj.turns[0].cost_usd > (context[0] + 2 * out_tokens[0]) / 1e6     # search was charged
  assert traj.turns[1].cost_usd > (context[1] + 2 * out_tokens[1]) / 1e6     # interpreter seconds
  assert traj.turns[2].cost_usd == pytest.approx((context[2] + 2 * out_tokens[2]) / 1e6)
  assert traj.cost_usd == pytest.approx(sum(t.cost_usd for t in traj.turns))
  assert traj.latency_s == pytest.approx(sum(t.latency_s for t in traj.turns)) and traj.latency_s > 0


def test_format_errors_become_observations(tokenizer):
  tools = {"answer": build_tool({"type": "answer"})}
  turns = ["no call at all" + IM_END, call("nope", {}), '<tool_call>{"name": "answer"' + IM_END,
           call("answer", {"answer": "x"})]
  traj = asyncio.run(run_episode(ScriptedEngine(tokenizer, turns), tokenizer, tools, MESSAGES,
                                 SamplingParams()))
  assert traj.finish_reason == "answer" and not traj.format_ok
  assert [bool(t.format_errors) for t in traj.turns] == [True, True, True, False]
  assert "no tool call" in traj.turns[0].observation
  assert "unknown tool 'nope'" in traj.turns[1].observation
  assert "unterminated" in traj.turns[2].observation


def test_random_model_runs_to_max_turns_without_crashing(tokenizer):
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
  engine = JaxEngine(CausalLM(cfg, rngs=nnx.Rngs(0)), prompt_bucket=128)
  tools = {"answer": build_tool({"type": "answer"})}

  async def main():
    return await asyncio.gather(*(run_episode(
        engine, tokenizer, tools, MESSAGES, SamplingParams(max_tokens=24, seed=s),
        EpisodeConfig(max_turns=3, max_total_tokens=1024)) for s in range(4)))

  for traj in asyncio.run(main()):
    assert traj.finish_reason in ("max_turns", "max_tokens")
    assert len(traj.turns) >= 1 and not traj.format_ok
    assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.behaviour_logprobs)
    assert sum(traj.loss_mask) > 0 and all(v == 0 for v in traj.weight_versions)


class Rendezvous(Tool):
  """Waits until `n` calls are inside it at once (or `give_up_s` passes); records the peak."""

  name, description = "sleep", "Waits for the others."
  parameters = {"type": "object", "properties": {}}

  def __init__(self, n, give_up_s=10.0):
    self.n, self.give_up_s = n, give_up_s
    self.inside = self.peak = 0
    self.all_in = asyncio.Event()

  async def run(self, args):
    self.inside += 1
    self.peak = max(self.peak, self.inside)
    if self.inside == self.n:
      self.all_in.set()
    try:   # episodes run one at a time would never meet: give up, let the rest through, fail
      await asyncio.wait_for(self.all_in.wait(), self.give_up_s)
    except TimeoutError:
      self.all_in.set()
    finally:
      self.inside -= 1
    return ToolResult(text="slept", cost_usd=0.001)


def test_64_episodes_with_a_slow_tool_run_concurrently(tokenizer):
  """All 64 episodes are inside their tool call at the same moment (serial runs would peak at 1)."""
  rendezvous = Rendezvous(64)
  tools = {"sleep": rendezvous, "answer": build_tool({"type": "answer"})}

  async def one(i):
    engine = ScriptedEngine(tokenizer, [call("sleep", {}), call("answer", {"answer": str(i)})])
    return await run_episode(engine, tokenizer, tools, MESSAGES, SamplingParams())

  async def main():
    return await asyncio.gather(*(one(i) for i in range(64)))

  trajs = asyncio.run(main())
  assert [t.answer for t in trajs] == [str(i) for i in range(64)]
  assert rendezvous.peak == 64
  assert all(t.turns[0].observation == "slept" and t.cost_usd >= 0.001 for t in trajs)


def test_hung_tool_times_out_and_the_episode_goes_on(tokenizer):
  """A tool that never returns is cancelled at `tool_timeout_s`; the episode carries on."""
  class Hang(Tool):
    name, description, parameters = "hang", "Never returns.", {"type": "object", "properties": {}}
    entered = cancelled = False

    async def run(self, args):
      Hang.entered = True
      try:
        await asyncio.Event().wait()           # nothing ever sets it
      except asyncio.CancelledError:
        Hang.cancelled = True
        raise

  tools = {"hang": Hang(), "answer": build_tool({"type": "answer"})}
  engine = ScriptedEngine(tokenizer, [call("hang", {}), call("answer", {"answer": "ok"})])

  async def main():   # the outer bound only turns a missing timeout into a failure, not a hang
    return await asyncio.wait_for(run_episode(engine, tokenizer, tools, MESSAGES, SamplingParams(),
                                              EpisodeConfig(tool_timeout_s=0.2)), 20)

  traj = asyncio.run(main())
  assert Hang.entered and Hang.cancelled
  assert traj.answer == "ok" and traj.finish_reason == "answer"
  assert traj.turns[0].observation.count("timed out after 0.2 s") == 1
  assert traj.turns[0].latency_s >= 0.2                     # the timeout is what the turn cost
  assert engine.turns == [] and len(engine.prompts) == 2    # the policy was asked again


def test_run_episodes_bounds_concurrency(tokenizer):
  running, peak = 0, 0

  class Counting(Tool):
    name, description, parameters = "sleep", "Waits.", {"type": "object", "properties": {}}

    async def run(self, args):
      nonlocal running, peak
      running += 1
      peak = max(peak, running)
      await asyncio.sleep(0.05)
      running -= 1
      return ToolResult(text="done")

  class PerEpisode:
    """Each generate call replays the two turns of the episode whose prompt it sees."""
    weight_version = 0

    async def generate(self, prompt_ids, sampling):
      turn = call("sleep", {}) if prompt_ids.count(im_start) < 4 else call("answer", {"answer": "a"})
      ids = tokenizer(turn, add_special_tokens=False)["input_ids"]
      return Completion(ids, [0.0] * len(ids), "stop", 0)

  im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
  tools = {"sleep": Counting(), "answer": build_tool({"type": "answer"})}
  trajs = asyncio.run(run_episodes(PerEpisode(), tokenizer, tools, [MESSAGES] * 20,
                                   SamplingParams(), max_concurrent=5))
  assert [t.answer for t in trajs] == ["a"] * 20 and 1 < peak <= 5


def test_engine_failure_ends_the_episode_with_a_reason(tokenizer):
  class Dead:
    weight_version = 0

    async def generate(self, prompt_ids, sampling):
      raise EngineError("server at http://127.0.0.1:1 is unreachable")

  traj = asyncio.run(run_episode(Dead(), tokenizer, {"answer": build_tool({"type": "answer"})},
                                 MESSAGES, SamplingParams()))
  assert traj.finish_reason == "engine_error" and "unreachable" in traj.error


@pytest.mark.parametrize("field, value, message", [
    ("max_turns", 0, "max_turns=0 must be >= 1"),
    ("max_total_tokens", -5, "max_total_tokens=-5 must be >= 1"),
    ("tool_timeout_s", 0.0, "tool_timeout_s=0.0 must be > 0"),
    ("price_out_per_1m", -1.0, "price_out_per_1m=-1.0 must be >= 0"),
    ("generation_latency_per_token_s", -0.1, "generation_latency_per_token_s=-0.1")])
def test_episode_config_validates_itself_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    EpisodeConfig(**{field: value})
