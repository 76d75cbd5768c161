"""A byte-level BPE tokenizer trained on an environment's own text, with the chat tokens.

Small vocabularies keep tiny CPU models fast; byte-level BPE can still encode
any text (no unknown tokens).
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestra.agent.chat_format import CHAT_TEMPLATE, IM_END, SPECIAL_TOKENS

PAD = "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, split_words: bool = True,
                    split_digits: bool = False):
  """A `PreTrainedTokenizerFast` with `<pad>` (id 0), the chat special tokens and CHAT_TEMPLATE.

  `split_words=False` lets merges cross spaces and punctuation, so text that
  repeats verbatim (a fixed system prompt with tool schemas) becomes a few
  long tokens -- what a tiny model with a short context wants. `split_digits`
  makes every digit its own token, so copying a number is copying digits.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_words)
  tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                byte_level]) if split_digits else byte_level)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, *SPECIAL_TOKENS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=IM_END,
                                 additional_special_tokens=list(SPECIAL_TOKENS))
  fast.chat_template = CHAT_TEMPLATE
  return fast
