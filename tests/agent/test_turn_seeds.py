"""Every turn of an episode samples with its own seed, reproducibly (run_episode, EngineAgent)."""

import asyncio
import json

import pytest
from tokenizer_fixture import make_tokenizer
from toy_domain import write_data

from orchestra.agent.chat_format import IM_END
from orchestra.agent.episode import EpisodeConfig, run_episode, turn_seed
from orchestra.engines.base import Completion, SamplingParams
from orchestra.envs.domains import load_domain
from orchestra.envs.domains.conversation import TicketUser, run_conversation
from orchestra.envs.domains.engine_agent import EngineAgent
from orchestra.tools import build_tool
from orchestra.tools.base import Tool, ToolResult

MESSAGES = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Go."}]


@pytest.fixture(scope="module")
def tokenizer():
  return make_tokenizer()


class Echo(Tool):
  name, description = "echo", "Returns ok."
  parameters = {"type": "object", "properties": {}}

  async def run(self, args):
    return ToolResult(text="ok")


class SeedRecorder:
  """Replays scripted turns and records the sampling seed of every request."""

  weight_version = 0

  def __init__(self, tokenizer, turns):
    self.tokenizer, self.turns, self.seeds = tokenizer, list(turns), []

  async def generate(self, prompt_ids, sampling):
    self.seeds.append(sampling.seed)
    ids = self.tokenizer(self.turns.pop(0) + IM_END, add_special_tokens=False)["input_ids"]
    return Completion(ids, [0.0] * len(ids), "stop", self.weight_version)


def call(name, args):
  return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>'


def episode_seeds(tokenizer, seed):
  turns = [call("echo", {})] * 4 + [call("answer", {"answer": "1"})]
  engine = SeedRecorder(tokenizer, turns)
  tools = {"echo": Echo(), "answer": build_tool({"type": "answer"})}
  traj = asyncio.run(run_episode(engine, tokenizer, tools, MESSAGES, SamplingParams(seed=seed),
                                 EpisodeConfig(max_turns=8, max_total_tokens=4096)))
  assert traj.finish_reason == "answer" and len(traj.turns) == 5
  return engine.seeds


def test_run_episode_gives_every_turn_its_own_seed(tokenizer):
  seeds = episode_seeds(tokenizer, seed=12)
  assert len(set(seeds)) == 5 and all(0 <= s < 2**31 for s in seeds)
  assert seeds == episode_seeds(tokenizer, seed=12)              # reproducible
  assert set(seeds).isdisjoint(episode_seeds(tokenizer, seed=13))  # the next episode differs
  assert episode_seeds(tokenizer, seed=None) == [None] * 5        # unseeded stays unseeded


def test_turn_seed_is_distinct_across_a_batch_of_episodes_and_turns():
  seeds = {turn_seed(s, t) for s in range(256) for t in range(16)}
  assert len(seeds) == 256 * 16


def test_engine_agent_gives_every_turn_its_own_seed(tokenizer, tmp_path):
  library = load_domain("toy_domain", write_data(tmp_path))
  turns = [call("find_book", {"title": "Dune"}), "<tool_call>\nnot json\n</tool_call>",
           call("find_book", {"title": "Dune"}), "Done."]

  def run(seed):
    engine = SeedRecorder(tokenizer, turns)
    agent = EngineAgent(engine, tokenizer, SamplingParams(seed=seed),
                        EpisodeConfig(max_turns=8, max_total_tokens=4096))
    asyncio.run(run_conversation(library, library.task("0"), agent, TicketUser()))
    return engine.seeds

  seeds = run(7)
  assert len(seeds) == 4 and len(set(seeds)) == 4     # a retried malformed turn included
  assert seeds == run(7)
