"""A tiny tokenizer with the chat special tokens, trained in the test on the fly."""

from __future__ import annotations

import pytest

from orchestra.agent.tokenizer import train_tokenizer

CORPUS = [
    "You are good at using tools. Search the knowledge base, run code, answer.",
    '{"name": "local_search", "arguments": {"query": "capital of Veloria"}}',
    '{"name": "code_interpreter", "arguments": {"code": "print(17 * 3)"}}',
    '{"name": "answer", "arguments": {"answer": "51"}}',
    "The capital of Veloria is Trundle. 51 exit code 0 stdout: stderr: Error: ",
    '{"type": "function", "function": {"name": "search", "description": "Search.", '
    '"parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}',
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?()[]{}<>/_-+*=\"'\n",
]


def make_tokenizer(vocab_size: int = 400):
  return train_tokenizer(CORPUS * 20, vocab_size)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  """`make_tokenizer()` saved to a folder (what exports and rollout servers read)."""
  path = tmp_path_factory.mktemp("tokenizer")
  make_tokenizer().save_pretrained(path)
  return str(path)
