"""launch/serve.py with the official openai client, HTTPEngine, weight reload, dead server."""

import asyncio
import json
import os
import time

import httpx
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from serve_fixture import serve
from tokenizer_fixture import make_tokenizer

from orchestra.agent.episode import run_episode
from orchestra.engines import EngineError, SamplingParams
from orchestra.engines.http_engine import HTTPEngine, vllm_serve_command
from orchestra.models import CausalLM, DecoderConfig, save_hf
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
           "prompt_ids": prompt_ids}


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


def test_bad_requests_get_clear_400s(server):
  r = httpx.post(server["url"] + "/v1/completions", json={"prompt": [], "max_tokens": 2})
  assert r.status_code == 400 and "prompt" in r.text
  r = httpx.post(server["url"] + "/v1/completions", json={"model": "other", "prompt": [1]})
  assert r.status_code == 404
  r = httpx.post(server["url"] + "/v1/completions", json={"prompt": [10**6], "max_tokens": 2})
  assert r.status_code == 400 and "token ids" in r.text


def test_http_engine_generates_and_reloads_weights(server):
  tokenizer = server["tokenizer"]
  other_cfg = server["model"].config
  other = CausalLM(other_cfg, rngs=nnx.Rngs(42))
  other_dir = save_hf(other, server["root"] / "other")
  prompt = server["prompt_ids"]
  greedy = SamplingParams(max_tokens=8, temperature=0.0)

  async def main():
    engine = HTTPEngine([server["url"]], "tool-caller")
    before = await engine.generate(prompt, greedy)
    await engine.update_weights(other_dir, version=1)
    after = await engine.generate(prompt, greedy)
    paused = httpx.get(server["url"] + "/is_paused").json()["is_paused"]
    await engine.aclose()
    return before, after, paused

  before, after, paused = asyncio.run(main())
  first, _ = generate(server["model"], [prompt], max_new_tokens=8)
  second, _ = generate(other, [prompt], max_new_tokens=8)
  assert before.token_ids == np.asarray(first)[0].tolist() and before.weight_version == 0
  assert after.token_ids == np.asarray(second)[0].tolist() and after.weight_version == 1
  assert before.token_ids != after.token_ids and not paused
  assert httpx.get(server["url"] + "/weight_version").json() == {"weight_version": 1}
  assert tokenizer is not None


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


def test_dead_server_fails_episodes_with_a_reason(server):
  server["proc"].kill()
  server["proc"].wait()

  async def main():
    engine = HTTPEngine([server["url"]], "tool-caller", max_retries=1, backoff_s=0.05)
    start = time.perf_counter()
    traj = await run_episode(engine, server["tokenizer"], {"answer": build_tool({"type": "answer"})},
                             MESSAGES, SamplingParams(max_tokens=8))
    return traj, time.perf_counter() - start

  traj, elapsed = asyncio.run(main())
  assert traj.finish_reason == "engine_error" and "unreachable" in traj.error
  assert elapsed < 10


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
