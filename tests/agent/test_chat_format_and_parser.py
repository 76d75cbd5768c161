"""The chat template renders like the Python renderer; the parser survives garbage."""

import json

import pytest
from tokenizer_fixture import make_tokenizer

from orchestra.agent.chat_format import observation_text, render_prompt
from orchestra.agent.parser import parse_turn

TOOLS = [
    {"type": "function", "function": {"name": "local_search", "description": "Search the KB.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                    "required": ["query"]}}},
    {"type": "function", "function": {"name": "answer", "description": "Final answer.",
     "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}}}},
]

CONVERSATIONS = [
    [{"role": "system", "content": "You are good at using tools."},
     {"role": "user", "content": "What is the capital of Veloria?"}],
    [{"role": "user", "content": "No system prompt here."}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
     {"role": "assistant", "content": "Let me search.", "tool_calls": [
         {"type": "function", "function": {"name": "local_search",
                                           "arguments": '{"query": "Veloria"}'}}]},
     {"role": "tool", "content": "Trundle is the capital."},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "answer", "arguments": {"answer": "Trundle"}}}]}],
]


@pytest.fixture(scope="module")
def tokenizer():
  return make_tokenizer()


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("with_tools", [True, False])
def test_tokenizer_template_renders_like_python(tokenizer, messages, with_tools):
  tools = TOOLS if with_tools else None
  ours = render_prompt(messages, tools)
  theirs = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                         add_generation_prompt=True)
  assert theirs == ours


def test_system_prompt_lists_each_tool_as_json(tokenizer):
  text = render_prompt(CONVERSATIONS[0], TOOLS)
  assert text.startswith("<|im_start|>system\nYou are good at using tools.\n\n# Tools")
  for tool in TOOLS:
    assert "\n" + json.dumps(tool) in text
  assert text.endswith("<|im_start|>user\nWhat is the capital of Veloria?<|im_end|>\n"
                       "<|im_start|>assistant\n")


def test_appending_observations_equals_rendering_the_conversation(tokenizer):
  """Turn-by-turn text (policy text + observation_text) equals a full re-render."""
  first = render_prompt(CONVERSATIONS[2][:2], TOOLS)
  turn1 = ('Let me search.<tool_call>\n{"name": "local_search", "arguments": {"query": "Veloria"}}'
           "\n</tool_call><|im_end|>")
  turn2 = '<tool_call>\n{"name": "answer", "arguments": {"answer": "Trundle"}}\n</tool_call><|im_end|>'
  incremental = first + turn1 + observation_text("Trundle is the capital.") + turn2
  full = render_prompt(CONVERSATIONS[2], TOOLS, add_generation_prompt=False)
  assert incremental + "\n" == full


def test_parser_accepts_a_well_formed_call():
  turn = parse_turn('Thinking.<tool_call>\n{"name": "local_search", "arguments": {"query": "x"}}'
                    "\n</tool_call>", {"local_search", "answer"})
  assert turn.valid and turn.content == "Thinking."
  assert turn.calls[0].name == "local_search" and turn.calls[0].arguments == {"query": "x"}


@pytest.mark.parametrize("text, message", [
    ("just prose", "no tool call"),
    ("<tool_call>\n{\"name\": \"answer\", \"arguments\": {", "unterminated"),
    ("<tool_call>{not json}</tool_call>", "invalid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "expected a JSON object"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'missing "name"'),
    ('<tool_call>{"name": "answer", "arguments": [1]}</tool_call>', "must be an object"),
    ('<tool_call>{"name": "answer", "arguments": "{bad"}</tool_call>', "not JSON"),
    ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "unknown tool 'rm_rf'"),
    ('<tool_call>{"name": "answer", "arguments": {}}</tool_call>'
     '<tool_call>{"name": "answer", "arguments": {}}</tool_call>', "called twice"),
    ("\x00\ufffd<tool_call><tool_call></tool_call>", "invalid JSON"),
])
def test_parser_reports_malformed_output(text, message):
  turn = parse_turn(text, {"local_search", "answer"})
  assert not turn.valid
  assert any(message in e for e in turn.errors), turn.errors


def test_string_arguments_are_decoded():
  turn = parse_turn('<tool_call>{"name": "answer", "arguments": "{\\"answer\\": \\"7\\"}"}'
                    "</tool_call>")
  assert turn.valid and turn.calls[0].arguments == {"answer": "7"}
