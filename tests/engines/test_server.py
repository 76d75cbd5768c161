"""launch/serve.py with the official openai client, HTTPEngine, weight reload, dead server;
the app's 400s and pause modes in process (`create_app` over a stub or tiny engine).

Each test stands alone: the tests on the shared `server` leave it as they found it
(same weights, resumed), and the ones that break something get their own.
"""

import asyncio
import threading
import contextlib
import json
import os
import socket

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from serve_fixture import serve
from sleeps_fixture import sleeps  # noqa: F401 (a fixture)
from tokenizer_fixture import make_tokenizer

from orchestra.agent.chat_format import IM_END
from orchestra.agent.parser import parse_turn
from orchestra.agent.episode import run_episode
from orchestra.engines import Completion, EngineError, SamplingParams
from orchestra.engines.http_engine import HTTPEngine, vllm_serve_command
from orchestra.engines.jax_engine import JaxEngine
from orchestra.engines.server import create_app
from orchestra.checkpoint import load_hf, save_hf
from orchestra.models import CausalLM, DecoderConfig
from orchestra.models.decoding import generate
from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig, make_optimizer,
                                 policy_loss_fn)
from orchestra.tools import build_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = [{"type": "function", "function": {
    "name": "local_search", "description": "Search the knowledge base.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}]
MESSAGES = [{"role": "user", "content": "What is the capital of Veloria?"}]
TARGET = ('<tool_call>\n{"name": "local_search", "arguments": {"query": "Veloria"}}\n'
          "</tool_call><|im_end|>")


def sft_tool_caller(tokenizer, steps=300):
  """A tiny Qwen3 fitted (SFT = policy loss with advantage 1) to answer MESSAGES with TARGET."""
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True)
  prompt = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True,
                                         tokenize=False)
  p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
  t = tokenizer(TARGET, add_special_tokens=False)["input_ids"]
  ids = jnp.asarray([p + t], jnp.int32)
  batch = {"tokens": ids, "attention_mask": jnp.ones_like(ids, bool),
           "loss_mask": jnp.asarray([[0] * len(p) + [1] * len(t)], bool),
           "advantages": jnp.ones(ids.shape), "behaviour_logp": jnp.zeros(ids.shape)}
  learner = Learner(CausalLM(cfg, rngs=nnx.Rngs(0)),
                    make_optimizer(OptimizerConfig(learning_rate=3e-3)),
                    policy_loss_fn(PolicyLossConfig()))
  for _ in range(steps):
    learner.update(batch)
  model = learner.model
  out, _ = generate(model, [p], max_new_tokens=len(t))
  assert np.asarray(out)[0].tolist() == t, "SFT did not fit the tool call"
  return model, p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  tokenizer = make_tokenizer()
  model, prompt_ids = sft_tool_caller(tokenizer)
  root = tmp_path_factory.mktemp("serve")
  tokenizer.save_pretrained(root / "tok")
  model_dir = save_hf(model, root / "tool-caller", tokenizer_dir=str(root / "tok"))
  with serve(model_dir) as (url, proc):
    yield {"url": url, "proc": proc, "tokenizer": tokenizer, "model": model, "root": root,
           "prompt_ids": prompt_ids, "model_dir": model_dir}


@pytest.mark.slow
def test_openai_client_models_completions_and_tool_calls(server):
  import openai
  client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused")
  assert [m.id for m in client.models.list().data] == ["tool-caller"]

  out = client.completions.create(model="tool-caller", prompt=server["prompt_ids"], max_tokens=6,
                                  temperature=0, logprobs=0,
                                  extra_body={"return_token_ids": True})
  choice = out.choices[0]
  expected, _ = generate(server["model"], [server["prompt_ids"]], max_new_tokens=6)
  assert choice.token_ids == np.asarray(expected)[0].tolist()
  assert len(choice.logprobs.token_logprobs) == 6
  assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
  assert choice.prompt_token_ids == server["prompt_ids"]
  assert out.usage.completion_tokens == 6

  chat = client.chat.completions.create(model="tool-caller", messages=MESSAGES, tools=TOOLS,
                                        temperature=0, max_tokens=64)
  message = chat.choices[0].message
  assert chat.choices[0].finish_reason == "tool_calls"
  assert message.tool_calls[0].function.name == "local_search"
  assert json.loads(message.tool_calls[0].function.arguments) == {"query": "Veloria"}


@pytest.mark.slow
def test_bad_requests_get_clear_400s(server):
  r = httpx.post(server["url"] + "/v1/completions", json={"prompt": [], "max_tokens": 2})
  assert r.status_code == 400 and "prompt" in r.text
  r = httpx.post(server["url"] + "/v1/completions", json={"model": "other", "prompt": [1]})
  assert r.status_code == 404
  r = httpx.post(server["url"] + "/v1/completions", json={"prompt": [10**6], "max_tokens": 2})
  assert r.status_code == 400 and "token ids" in r.text


@pytest.mark.slow
def test_http_engine_generates_and_reloads_weights(server):
  other = CausalLM(server["model"].config, rngs=nnx.Rngs(42))
  other_dir = save_hf(other, server["root"] / "other")
  prompt = server["prompt_ids"]
  greedy = SamplingParams(max_tokens=8, temperature=0.0)
  start_version = int(httpx.get(server["url"] + "/weight_info").json()["weight_version"])

  async def main():
    engine = HTTPEngine([server["url"]], "tool-caller", weight_version=start_version)
    try:
      before = await engine.generate(prompt, greedy)
      await engine.update_weights(other_dir, version=start_version + 1)
      after = await engine.generate(prompt, greedy)
      paused = httpx.get(server["url"] + "/is_paused").json()["is_paused"]
      version = int(httpx.get(server["url"] + "/weight_info").json()["weight_version"])
    finally:   # the shared server goes back to the fitted weights for the other tests
      await engine.update_weights(server["model_dir"], version=start_version + 2)
      await engine.aclose()
    return before, after, paused, version

  before, after, paused, version = asyncio.run(main())
  first, _ = generate(server["model"], [prompt], max_new_tokens=8)
  second, _ = generate(other, [prompt], max_new_tokens=8)
  assert before.token_ids == np.asarray(first)[0].tolist()
  assert after.token_ids == np.asarray(second)[0].tolist()
  assert (before.weight_version, after.weight_version) == (start_version, start_version + 1)
  assert before.token_ids != after.token_ids and not paused
  assert version == start_version + 1


@pytest.mark.slow
def test_llm_tool_against_the_server(server):
  tool = build_tool({"type": "llm", "name": "expert-1", "model": "tool-caller",
                     "base_url": server["url"] + "/v1", "price_in_per_1m": 2.0,
                     "price_out_per_1m": 8.0, "max_tokens": 64})
  result = asyncio.run(tool({"prompt": "What is the capital of Veloria?"}))
  assert result.error is None and result.text
  usage = result.usage
  assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
  assert result.cost_usd == pytest.approx(
      (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6)
  assert tool.schema()["function"]["name"] == "expert-1"


@contextlib.contextmanager
def dead_url():
  """A 127.0.0.1 URL whose port is held (bound, never listening): connecting is refused."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_dead_server_fails_episodes_with_a_reason(sleeps):
  """A server that refuses connections ends the episode after the retry policy's 2 tries."""
  tokenizer = make_tokenizer()
  with dead_url() as url:
    async def main():
      engine = HTTPEngine([url], "tool-caller", max_retries=1, backoff_s=0.05)
      try:
        return await run_episode(engine, tokenizer, {"answer": build_tool({"type": "answer"})},
                                 MESSAGES, SamplingParams(max_tokens=8))
      finally:
        await engine.aclose()

    traj = asyncio.run(main())
  assert traj.finish_reason == "engine_error" and "unreachable after 2 tries" in traj.error
  assert url in traj.error and "ClientConnectorError" in traj.error
  assert sleeps == [0.05]            # one backoff between the two tries, none after the last
  assert traj.turns == []


def test_vllm_serve_command():
  argv, env = vllm_serve_command("/ckpt/step_100", port=9000, tensor_parallel_size=2,
                                 served_model_name="policy")
  assert argv[:3] == ["vllm", "serve", "/ckpt/step_100"]
  for flag, value in (("--logprobs-mode", "processed_logprobs"), ("--max-logprobs", "-1"),
                      ("--tool-call-parser", "hermes"), ("--tensor-parallel-size", "2")):
    assert argv[argv.index(flag) + 1] == value
  assert env == {"VLLM_SERVER_DEV_MODE": "1"}


def test_http_engine_requires_its_api_key(monkeypatch):
  monkeypatch.delenv("ORCHESTRA_TEST_KEY", raising=False)
  with pytest.raises(ValueError, match="ORCHESTRA_TEST_KEY"):
    HTTPEngine(["http://127.0.0.1:1"], "m", api_key_env="ORCHESTRA_TEST_KEY")
  with pytest.raises(EngineError):
    asyncio.run(HTTPEngine(["http://127.0.0.1:1"], "m", max_retries=0).generate(
        [1, 2], SamplingParams(max_tokens=1)))


# In process: `create_app` over a stub engine (400s, pause modes) or a tiny JaxEngine (reload).


@pytest.fixture(scope="module")
def tokenizer():
  return make_tokenizer()


class HeldEngine:
  """A stub engine: each generate call waits for `release`; counts calls started and finished."""

  weight_version = 0

  def __init__(self, released=False):
    self.release = asyncio.Event()
    if released:
      self.release.set()
    self.started = self.finished = 0

  async def generate(self, prompt_ids, sampling):
    self.started += 1
    await self.release.wait()
    self.finished += 1
    return Completion([5, 6], [-0.1, -0.2], "length", self.weight_version)


def app_client(engine, tokenizer, **options):
  """An httpx client calling the app over `engine` in this event loop (no socket);
  `options` go to `create_app` (dev_mode, api_key, strict)."""
  app = create_app(engine, tokenizer, "stub", max_model_len=4096, tool_call_parser=parse_turn,
                   end_of_turn=IM_END, eos_token_ids=(), **options)
  return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def settle(turns=200):
  """Lets every task that can make progress do so (a request not held would reach the engine)."""
  for _ in range(turns):
    await asyncio.sleep(0)


async def until(predicate, what, turns=2000):
  for _ in range(turns):
    if await predicate():
      return
    await asyncio.sleep(0)
  raise AssertionError(f"never happened: {what}")


COMPLETION = {"prompt": [1, 2, 3], "max_tokens": 2}


@pytest.mark.parametrize("mode", ["wait", "abort"])
def test_pause_drains_in_flight_requests_and_holds_new_ones(tokenizer, mode):
  """wait (and abort, which cannot cut a batch short here) returns once in-flight requests end;
  requests arriving while paused reach the engine only after /resume."""
  engine = HeldEngine()

  async def main():
    async with app_client(engine, tokenizer) as client:
      async def started_one():
        return engine.started == 1

      async def paused():
        return (await client.get("/is_paused")).json()["is_paused"]

      first = asyncio.create_task(client.post("/v1/completions", json=COMPLETION))
      await until(started_one, "the first request reaches the engine")
      pause = asyncio.create_task(client.post("/pause", params={"mode": mode}))
      await until(paused, "the server reports it is paused")
      await settle()
      assert not pause.done()                      # still draining the in-flight request
      second = asyncio.create_task(client.post("/v1/completions", json=COMPLETION))
      await settle()
      assert engine.started == 1                   # the new request waits at the gate
      engine.release.set()
      assert (await first).status_code == 200
      response = await pause
      assert response.status_code == 200 and response.json() == {"status": "paused"}
      await settle()
      assert engine.started == 1 and not second.done()
      assert (await client.post("/resume")).json() == {"status": "resumed"}
      assert (await second).status_code == 200
      assert engine.started == engine.finished == 2 and not await paused()

  asyncio.run(main())


def test_pause_keep_returns_at_once_and_lets_in_flight_requests_finish(tokenizer):
  engine = HeldEngine()

  async def main():
    async with app_client(engine, tokenizer) as client:
      async def started_one():
        return engine.started == 1

      first = asyncio.create_task(client.post("/v1/completions", json=COMPLETION))
      await until(started_one, "the first request reaches the engine")
      response = await asyncio.wait_for(client.post("/pause", params={"mode": "keep"}), 10)
      assert response.json() == {"status": "paused"} and engine.finished == 0
      assert (await client.get("/is_paused")).json() == {"is_paused": True}
      second = asyncio.create_task(client.post("/v1/completions", json=COMPLETION))
      engine.release.set()
      assert (await first).status_code == 200      # the in-flight request was kept, not lost
      await settle()
      assert engine.started == 1 and not second.done()
      await client.post("/resume")
      assert (await second).status_code == 200 and engine.started == 2

  asyncio.run(main())


@pytest.mark.parametrize("mode", ["", "drain", "WAIT"])
def test_pause_with_an_unknown_mode_is_a_400_and_does_not_pause(tokenizer, mode):
  async def main():
    async with app_client(HeldEngine(released=True), tokenizer) as client:
      response = await client.post("/pause", params={"mode": mode})
      return response, (await client.get("/is_paused")).json()

  response, paused = asyncio.run(main())
  assert response.status_code == 400 and "mode" in response.json()["detail"]
  assert "wait, keep or abort" in response.json()["detail"] and paused == {"is_paused": False}


USER = [{"role": "user", "content": "What is the capital of Veloria?"}]


@pytest.mark.parametrize("body, field", [
    (b"{not json", "JSON"),
    ([USER], "JSON object"),
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"content": "no role"}]}, "messages[0]"),
    ({"messages": USER + [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": USER, "tools": "local_search"}, "tools"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0]"),
    ({"messages": USER, "tools": TOOLS + [{"type": "function", "function": {"description": "x"}}]},
     "tools[1]"),
    ({"messages": USER, "max_tokens": "many"}, "max_tokens"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "max_completion_tokens": -3}, "max_completion_tokens"),
    ({"messages": USER, "temperature": -1}, "temperature"),
    ({"messages": USER, "top_p": 0}, "top_p"),
    ({"messages": USER, "top_p": 1.5}, "top_p"),
    ({"messages": USER, "top_k": -5}, "top_k"),
    ({"messages": USER, "seed": "lucky"}, "seed"),
    ({"messages": USER, "stop_token_ids": "2"}, "stop_token_ids"),
    ({"messages": USER, "n": 2}, "n"),
    ({"messages": USER, "stream": True}, "stream"),
])
def test_bad_chat_requests_are_400s_naming_the_field(tokenizer, body, field):
  engine = HeldEngine(released=True)

  async def main():
    async with app_client(engine, tokenizer) as client:
      if isinstance(body, bytes):
        return await client.post("/v1/chat/completions", content=body,
                                 headers={"content-type": "application/json"})
      return await client.post("/v1/chat/completions", json=body)

  response = asyncio.run(main())
  assert response.status_code == 400, response.text
  assert field in response.json()["detail"]
  assert engine.started == 0


def test_a_good_chat_request_to_the_same_app_is_answered(tokenizer):
  """The control for the 400s above: the same app answers a well-formed request."""
  engine = HeldEngine(released=True)

  async def main():
    async with app_client(engine, tokenizer) as client:
      return await client.post("/v1/chat/completions", json={
          "messages": USER, "tools": TOOLS, "max_tokens": 4, "temperature": 0, "top_p": 1,
          "top_k": -1, "n": 1, "stream": False, "seed": 3})

  response = asyncio.run(main())
  assert response.status_code == 200, response.text
  assert response.json()["choices"][0]["finish_reason"] == "length" and engine.started == 1


@pytest.mark.parametrize("body, field", [
    ({"prompt": [1, 2], "n": 0}, "n"),
    ({"prompt": [1, 2], "n": "two"}, "n"),
    ({"prompt": [1, 2], "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": [1, 2], "stop_token_ids": [-1]}, "stop_token_ids"),
    ({"prompt": [1, 2], "stream": True}, "stream"),
])
def test_bad_completion_requests_are_400s_naming_the_field(tokenizer, body, field):
  engine = HeldEngine(released=True)

  async def main():
    async with app_client(engine, tokenizer) as client:
      return await client.post("/v1/completions", json=body)

  response = asyncio.run(main())
  assert response.status_code == 400 and field in response.json()["detail"], response.text
  assert engine.started == 0


TINY = dict(model_type="qwen3", hidden_size=32, intermediate_size=48, num_layers=1, num_heads=2,
            num_kv_heads=1, head_dim=16, qk_norm=True)


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory):
  """HF folders: `same` fits the tiny served model, `other` is a deeper model, `empty` is empty."""
  root = tmp_path_factory.mktemp("reload")
  cfg = DecoderConfig(vocab_size=len(tokenizer), **TINY)
  deeper = DecoderConfig(vocab_size=len(tokenizer), **{**TINY, "num_layers": 2})
  (root / "empty").mkdir()
  return {"cfg": cfg, "root": root, "empty": str(root / "empty"),
          "same": save_hf(CausalLM(cfg, rngs=nnx.Rngs(1)), root / "same"),
          "other": save_hf(CausalLM(deeper, rngs=nnx.Rngs(2)), root / "other")}


def reload(client, **kwargs):
  return client.post("/collective_rpc", json={"method": "reload_weights", "kwargs": kwargs})


@pytest.mark.parametrize("case, status, field", [
    ("missing", 400, "config.json"), ("empty", 400, "config.json"), ("other", 400, "do not fit"),
    ("no_path", 400, "kwargs.weights_path"), ("path_not_text", 400, "kwargs.weights_path"),
    ("kwargs_not_object", 400, "kwargs must be an object"),
    ("other_method", 400, "method 'load_weights'"),
    # vLLM's reload_weights takes no version: its worker raises TypeError, answered 500
    ("version_kwarg", 500, "unexpected keyword argument 'weight_version'"),
])
def test_reload_with_a_bad_folder_or_request_fails_and_keeps_the_weights(
    tokenizer, folders, case, status, field):
  model = CausalLM(folders["cfg"], rngs=nnx.Rngs(0))
  engine = JaxEngine(model)
  bodies = {
      "missing": {"weights_path": str(folders["root"] / "nope")},
      "empty": {"weights_path": folders["empty"]},
      "other": {"weights_path": folders["other"]},
      "no_path": {},
      "path_not_text": {"weights_path": 5},
      "version_kwarg": {"weights_path": folders["same"], "weight_version": 4},
  }

  async def main():
    async with app_client(engine, tokenizer) as client:
      if case == "kwargs_not_object":
        response = await client.post("/collective_rpc", json={"method": "reload_weights",
                                                             "kwargs": folders["same"]})
      elif case == "other_method":
        response = await client.post("/collective_rpc", json={
            "method": "load_weights", "kwargs": {"weights_path": folders["same"]}})
      else:
        response = await reload(client, **bodies[case])
      return response, (await client.get("/weight_info")).json()

  response, version = asyncio.run(main())
  assert response.status_code == status, response.text
  assert field in response.json()["detail"]
  assert engine.model is model and version == {"weight_version": "0"}


@pytest.mark.parametrize("body", [{}, {"new_version": 7}, {"new_version": "v7"}])
def test_update_weight_version_needs_a_string_of_digits(tokenizer, body):
  engine = HeldEngine(released=True)

  async def main():
    async with app_client(engine, tokenizer) as client:
      return await client.post("/update_weight_version", json=body)

  response = asyncio.run(main())
  assert response.status_code == 400 and "new_version" in response.text


def test_reload_from_a_good_folder_swaps_weights_and_keeps_the_served_dtype(tokenizer, folders):
  """The control for the failures above; the folder (float32) is loaded as the served
  bfloat16; the version changes only through /update_weight_version, as in vLLM."""
  model = CausalLM(folders["cfg"], param_dtype=jnp.bfloat16, dtype=jnp.bfloat16,
                   rngs=nnx.Rngs(0))
  engine = JaxEngine(model)

  async def main():
    async with app_client(engine, tokenizer) as client:
      response = await reload(client, weights_path=folders["same"])
      same = (await client.get("/weight_info")).json()
      updated = await client.post("/update_weight_version", json={"new_version": "4"})
      return response, same, updated.json(), (await client.get("/weight_info")).json()

  response, same, updated, version = asyncio.run(main())
  assert response.status_code == 200 and response.json() == {"results": [None]}, response.text
  assert same == {"weight_version": "0"} and updated == {"success": True, "new_version": "4"}
  assert version == {"weight_version": "4"}
  assert engine.model is not model
  dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(engine.model, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  loaded = nnx.state(load_hf(folders["same"]), nnx.Param)
  np.testing.assert_allclose(np.asarray(engine.model.lm_head[...], np.float32),
                             np.asarray(loaded["lm_head"][...]), rtol=1e-2, atol=1e-2)


class BlockingTokenizer:
  """The real tokenizer, except that encoding waits (in whatever thread runs it) until the
  test releases it, and records whether the release came while it waited."""

  def __init__(self, tokenizer):
    self._tokenizer = tokenizer
    self.started, self.release = threading.Event(), threading.Event()
    self.released_while_encoding = []

  def __call__(self, *args, **kwargs):
    self.started.set()
    self.released_while_encoding.append(self.release.wait(timeout=10))
    return self._tokenizer(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._tokenizer, name)


@pytest.mark.parametrize("route, body", [
    ("/v1/completions", {"prompt": "a long prompt " * 200, "max_tokens": 2}),
    ("/v1/chat/completions", {"messages": USER, "max_tokens": 2}),
])
def test_tokenising_a_prompt_leaves_the_event_loop_free(tokenizer, route, body):
  """/health answers while a prompt is being tokenised (it would wait 10 s on the loop)."""
  slow = BlockingTokenizer(tokenizer)
  engine = HeldEngine(released=True)

  async def main():
    async with app_client(engine, slow) as client:
      request = asyncio.create_task(client.post(route, json=body))
      while not slow.started.is_set() and not request.done():
        await asyncio.sleep(0.01)                      # until encoding has begun
      health = await client.get("/health")             # served while encoding is blocked
      if health.status_code == 200:
        slow.release.set()
      return await request

  response = asyncio.run(main())
  assert response.status_code == 200, response.text
  assert slow.released_while_encoding[:1] == [True]


def test_api_key_guards_v1_routes_like_vllm(tokenizer):
  async def main():
    async with app_client(HeldEngine(released=True), tokenizer, api_key="s3cret") as client:
      body = {"prompt": [1, 2], "max_tokens": 2}
      missing = await client.post("/v1/completions", json=body)
      wrong = await client.post("/v1/completions", json=body,
                                headers={"Authorization": "Bearer nope"})
      right = await client.post("/v1/completions", json=body,
                                headers={"Authorization": "bearer s3cret"})
      health = await client.get("/health")                # not under /v1: open, as in vLLM
      return missing, wrong, right, health

  missing, wrong, right, health = asyncio.run(main())
  assert (missing.status_code, wrong.status_code) == (401, 401)
  assert missing.json() == {"error": "Unauthorized"}
  assert right.status_code == 200 and health.status_code == 200


def test_weight_routes_exist_only_in_dev_mode(tokenizer):
  async def main():
    async with app_client(HeldEngine(released=True), tokenizer, dev_mode=False) as client:
      return [(await client.post(route)).status_code for route in
              ("/pause", "/resume", "/collective_rpc", "/update_weight_version",
               "/reset_prefix_cache")] + [(await client.get("/weight_info")).status_code]

  assert asyncio.run(main()) == [404] * 6


def test_strict_mode_refuses_fields_vllm_would_ignore_and_reports_weight_versions(tokenizer):
  async def main():
    async with app_client(HeldEngine(released=True), tokenizer, strict=True) as client:
      typo = await client.post("/v1/completions", json={"prompt": [1], "max_tokens": 2,
                                                        "return_weight_version": True})
      good = await client.post("/v1/completions", json={"prompt": [1], "max_tokens": 2,
                                                        "return_weight_versions": True})
      return typo, good

  typo, good = asyncio.run(main())
  assert typo.status_code == 400 and "return_weight_version" in typo.text
  assert good.json()["choices"][0]["weight_versions"] == [{"version": "0", "start": 0,
                                                            "end": 2}]


def test_reset_prefix_cache_empties_the_engines_prefix_cache(tokenizer, folders):
  engine = JaxEngine(CausalLM(folders["cfg"], rngs=nnx.Rngs(0)), prompt_bucket=16,
                     prefix_min_saving=0)
  asyncio.run(engine.generate(list(range(1, 60)), SamplingParams(max_tokens=4, seed=0)))
  assert len(engine.prefix_cache) == 1

  async def main():
    async with app_client(engine, tokenizer) as client:
      return (await client.post("/reset_prefix_cache")).json()

  assert asyncio.run(main()) == {"success": True}
  assert len(engine.prefix_cache) == 0 and engine.prefix_cache.nbytes == 0
