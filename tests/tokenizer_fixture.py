"""A tiny BPE tokenizer with the chat special tokens, trained in the test on the fly."""

from __future__ import annotations

from orchestra.agent.chat_format import CHAT_TEMPLATE, SPECIAL_TOKENS

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
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", *SPECIAL_TOKENS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS * 20, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                 additional_special_tokens=list(SPECIAL_TOKENS))
  fast.chat_template = CHAT_TEMPLATE
  return fast
