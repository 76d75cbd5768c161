"""The server's request fields against vLLM's: where generation stops and `stop_reason`,
fields vLLM honours and this server does not (refused unless neutral), and the chat
template's options. In process, over a stub engine that records what it was asked."""

import asyncio
import copy
import json

import httpx
import pytest
from tokenizer_fixture import make_tokenizer

from orchestra.agent.chat_format import IM_END
from orchestra.agent.parser import parse_turn
from orchestra.engines import Completion
from orchestra.engines.server import create_app

USER = [{"role": "user", "content": "What is 17 * 3?"}]
THINKING_SWITCH = ("{%- if add_generation_prompt and enable_thinking is defined and "
                   "not enable_thinking %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}")


class RecordingEngine:
  """Answers every request with `reply` and keeps the SamplingParams it was given."""

  weight_version = 0

  def __init__(self, reply=Completion([5, 6], [-0.1, -0.2], "length", 0)):
    self.reply, self.sampled = reply, []

  async def generate(self, prompt_ids, sampling):
    self.sampled.append(sampling)
    return self.reply


@pytest.fixture(scope="module")
def tokenizer():
  tok = make_tokenizer()
  tok.chat_template = tok.chat_template + THINKING_SWITCH
  return tok


def post(tokenizer, route, body, engine=None, eos_token_ids=()):
  """(response, engine): one request to a strict app over `engine`."""
  engine = engine or RecordingEngine()
  app = create_app(engine, tokenizer, "stub", max_model_len=4096, tool_call_parser=parse_turn,
                   end_of_turn=IM_END, eos_token_ids=eos_token_ids, strict=True)

  async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://app") as client:
      return await client.post(route, json=body)

  return asyncio.run(main()), engine


COMPLETION = ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2})
CHAT = ("/v1/chat/completions", {"messages": USER, "max_tokens": 2})


@pytest.mark.parametrize("route, body", [COMPLETION, CHAT])
def test_generation_stops_at_the_models_eos_unless_ignore_eos(tokenizer, route, body):
  """The tokenizer's eos and the generation config's (here 9 and the eos again), as vLLM."""
  eos = tokenizer.eos_token_id
  _, engine = post(tokenizer, route, {**body, "stop_token_ids": [7]}, eos_token_ids=(9, eos))
  assert engine.sampled[0].stop_token_ids == (7, eos, 9)
  _, engine = post(tokenizer, route, {**body, "stop_token_ids": [7], "ignore_eos": True})
  assert engine.sampled[0].stop_token_ids == (7,)
  response, _ = post(tokenizer, route, {**body, "ignore_eos": "yes"})
  assert response.status_code == 400 and "ignore_eos" in response.text


@pytest.mark.parametrize("route, body", [COMPLETION, CHAT])
@pytest.mark.parametrize("last, finish, extra, stop_reason", [
    ("eos", "stop", {}, None),                       # vLLM: eos -> None
    (7, "stop", {"stop_token_ids": [7]}, 7),         # a stop token -> its id
    ("eos", "stop", {"ignore_eos": True, "stop_token_ids": ["eos"]}, "eos"),
    (7, "length", {"stop_token_ids": [7]}, None),    # ran to max_tokens
    (9, "stop", {}, 9),                              # a generation-config eos -> its id
])
def test_stop_reason_is_vllms(tokenizer, route, body, last, finish, extra, stop_reason):
  eos = tokenizer.eos_token_id
  resolve = lambda t: eos if t == "eos" else t                         # noqa: E731
  extra = {k: [resolve(t) for t in v] if k == "stop_token_ids" else v for k, v in extra.items()}
  engine = RecordingEngine(Completion([5, resolve(last)], [-0.1, -0.2], finish, 0))
  response, _ = post(tokenizer, route, {**body, **extra}, engine, eos_token_ids=(9,))
  assert response.status_code == 200, response.text
  assert response.json()["choices"][0]["stop_reason"] == resolve(stop_reason)


@pytest.mark.parametrize("route, field, value", [
    ("/v1/completions", "stop", ["\n"]),
    ("/v1/completions", "stop", "Answer:"),
    ("/v1/completions", "stop", ""),                 # vLLM: a 400 too
    ("/v1/completions", "min_p", 0.05),
    ("/v1/completions", "presence_penalty", 0.5),
    ("/v1/completions", "frequency_penalty", -0.5),
    ("/v1/completions", "repetition_penalty", 1.1),
    ("/v1/completions", "logit_bias", {"5": -100}),
    ("/v1/completions", "min_tokens", 4),
    ("/v1/completions", "prompt_logprobs", 0),
    ("/v1/completions", "bad_words", ["no"]),
    ("/v1/completions", "allowed_token_ids", [5, 6]),
    ("/v1/completions", "logprob_token_ids", [5]),
    ("/v1/completions", "response_format", {"type": "json_object"}),
    ("/v1/completions", "structured_outputs", {"choice": ["yes", "no"]}),
    ("/v1/completions", "thinking_token_budget", 64),
    ("/v1/completions", "use_beam_search", True),
    ("/v1/completions", "repetition_detection", {"max_pattern_size": 4}),
    ("/v1/completions", "truncate_prompt_tokens", 8),
    ("/v1/completions", "priority", 1),
    ("/v1/completions", "stream_options", {"include_usage": True}),
    ("/v1/completions", "logprobs", 5),
    ("/v1/completions", "echo", True),
    ("/v1/completions", "suffix", "end"),
    ("/v1/completions", "suffix", ""),
    ("/v1/chat/completions", "echo", True),
    ("/v1/chat/completions", "reasoning_effort", "low"),
    ("/v1/chat/completions", "stop", ["</tool_call>"]),
    ("/v1/chat/completions", "top_logprobs", 3),
    ("/v1/chat/completions", "tool_choice", "required"),
    ("/v1/chat/completions", "tool_choice", {"type": "function",
                                             "function": {"name": "local_search"}}),
    ("/v1/chat/completions", "response_format", {"type": "json_object"}),
    ("/v1/chat/completions", "chat_template", "{{ messages }}"),
])
def test_fields_vllm_honours_and_this_server_does_not_are_400s(tokenizer, route, field, value):
  """Answering as if they were absent would sample or render differently from vLLM."""
  body = COMPLETION[1] if route == COMPLETION[0] else CHAT[1]
  response, engine = post(tokenizer, route, {**body, field: value})
  assert response.status_code == 400, response.text
  assert response.json()["detail"].startswith(f"{field}=") and not engine.sampled


@pytest.mark.parametrize("route, neutral", [
    ("/v1/completions", {"stop": [], "min_p": 0, "presence_penalty": 0.0,
                         "frequency_penalty": 0, "repetition_penalty": 1.0, "logit_bias": {},
                         "min_tokens": 0, "prompt_logprobs": None, "priority": 0,
                         "spaces_between_special_tokens": True, "logprobs": 0, "echo": False,
                         "suffix": None, "include_stop_str_in_output": False,
                         "stream_options": {}, "bad_words": [], "use_beam_search": False,
                         "skip_special_tokens": True, "truncation_side": "left"}),
    ("/v1/completions", {"spaces_between_special_tokens": False}),     # no effect: skipped
    ("/v1/chat/completions", {"stop": None, "top_logprobs": 0, "tool_choice": "auto",
                              "parallel_tool_calls": True, "response_format": {"type": "text"},
                              "chat_template": None, "logprobs": True, "echo": False,
                              "include_reasoning": False, "add_special_tokens": False}),
])
def test_the_same_fields_at_their_neutral_values_are_accepted(tokenizer, route, neutral):
  body = COMPLETION[1] if route == COMPLETION[0] else CHAT[1]
  response, engine = post(tokenizer, route, {**body, **neutral})
  assert response.status_code == 200, response.text
  assert len(engine.sampled) == 1


def rendered(tokenizer, messages, **options):
  text = tokenizer.apply_chat_template(messages, tokenize=False, **options)
  return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("options, template_options", [
    ({}, {"add_generation_prompt": True}),
    ({"chat_template_kwargs": {"enable_thinking": False}},
     {"add_generation_prompt": True, "enable_thinking": False}),
    ({"add_generation_prompt": False}, {"add_generation_prompt": False}),
])
def test_chat_template_options_reach_the_template(tokenizer, options, template_options):
  response, _ = post(tokenizer, CHAT[0], {**CHAT[1], "return_token_ids": True, **options})
  assert response.status_code == 200, response.text
  assert response.json()["prompt_token_ids"] == rendered(tokenizer, USER, **template_options)


def test_continue_final_message_renders_the_open_assistant_turn(tokenizer):
  messages = USER + [{"role": "assistant", "content": "The answer is"}]
  response, _ = post(tokenizer, CHAT[0], {"messages": messages, "max_tokens": 2,
                                         "return_token_ids": True, "add_generation_prompt": False,
                                         "continue_final_message": True})
  assert response.status_code == 200, response.text
  prompt = response.json()["prompt_token_ids"]
  assert prompt == rendered(tokenizer, messages, continue_final_message=True)
  assert tokenizer.decode(prompt).endswith("The answer is")


@pytest.mark.parametrize("options, field", [
    ({"continue_final_message": True}, "continue_final_message"),   # with the default prompt
    ({"add_generation_prompt": "yes"}, "add_generation_prompt"),
    ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"chat_template": "{{ messages }}"}}, "chat_template"),
    ({"chat_template_kwargs": {"tokenize": True}}, "tokenize"),
    ({"add_generation_prompt": None}, "add_generation_prompt"),
    ({"documents": "a text"}, "documents"),
])
def test_bad_chat_template_options_are_400s(tokenizer, options, field):
  response, engine = post(tokenizer, CHAT[0], {**CHAT[1], **copy.deepcopy(options)})
  assert response.status_code == 400 and field in response.json()["detail"]
  assert not engine.sampled


def test_spaces_between_special_tokens_is_refused_where_it_would_matter(tokenizer):
  response, engine = post(tokenizer, COMPLETION[0], {
      **COMPLETION[1], "skip_special_tokens": False, "spaces_between_special_tokens": False})
  assert response.status_code == 400 and "spaces_between_special_tokens" in response.text
  assert not engine.sampled


def test_best_of_is_unknown_to_vllm_now_so_strict_mode_refuses_it(tokenizer):
  response, _ = post(tokenizer, COMPLETION[0], {**COMPLETION[1], "best_of": 2})
  assert response.status_code == 400 and "not in vLLM's request schema" in response.text


TWO_CALLS = ('<tool_call>\n{"name": "search_a", "arguments": {"query": "a"}}\n</tool_call>'
             '<tool_call>\n{"name": "search_b", "arguments": {"query": "b"}}\n</tool_call>')
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}
         for name in ("search_a", "search_b")]


@pytest.mark.parametrize("options, queries", [
    ({}, ["a", "b"]),
    ({"parallel_tool_calls": False}, ["a"]),        # vLLM keeps the first call
    ({"tool_choice": "none"}, []),
    ({"tool_choice": None}, []),                    # vLLM parses calls only for "auto"
])
def test_tool_call_options(tokenizer, options, queries):
  ids = tokenizer(TWO_CALLS, add_special_tokens=False)["input_ids"]
  engine = RecordingEngine(Completion(ids, [-0.1] * len(ids), "stop", 0))
  response, _ = post(tokenizer, CHAT[0], {**CHAT[1], "tools": TOOLS, **options}, engine)
  assert response.status_code == 200, response.text
  calls = response.json()["choices"][0]["message"].get("tool_calls") or []
  assert [json.loads(c["function"]["arguments"])["query"] for c in calls] == queries


@pytest.fixture(scope="module")
def bos_tokenizer():
  """A tokenizer whose special tokens include a BOS the post-processor prepends."""
  from tokenizers.processors import TemplateProcessing
  tok = make_tokenizer()
  bos = tok.convert_tokens_to_ids("<|im_start|>")
  tok.backend_tokenizer.post_processor = TemplateProcessing(
      single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
  return tok, bos


@pytest.mark.parametrize("route, body, default_has_bos", [
    ("/v1/completions", {"prompt": "What is 17 * 3?", "max_tokens": 2}, True),
    ("/v1/chat/completions", CHAT[1], False),
])
def test_add_special_tokens_defaults_as_vllms(bos_tokenizer, route, body, default_has_bos):
  tok, bos = bos_tokenizer
  prompts = {}
  for flag in (None, True, False):
    extra = {} if flag is None else {"add_special_tokens": flag}
    response, _ = post(tok, route, {**body, "return_token_ids": True, **extra})
    assert response.status_code == 200, response.text
    answer = response.json()
    prompts[flag] = (answer["choices"][0]["prompt_token_ids"] if "prompt" in body
                     else answer["prompt_token_ids"])
  assert prompts[True] == [bos] + prompts[False]
  assert prompts[None] == prompts[default_has_bos]


def test_chat_template_kwargs_win_over_request_fields_as_in_vllm(tokenizer):
  """vLLM builds the template's arguments from the request's fields, then updates them
  with `chat_template_kwargs`."""
  response, _ = post(tokenizer, CHAT[0], {**CHAT[1], "return_token_ids": True,
                                          "chat_template_kwargs": {"add_generation_prompt": False}})
  assert response.status_code == 200, response.text
  assert response.json()["prompt_token_ids"] == rendered(tokenizer, USER,
                                                         add_generation_prompt=False)
