"""A byte-level BPE tokenizer trained on an environment's own text, with the chat tokens.

Small vocabularies keep tiny CPU models fast; byte-level BPE can still encode
any text (no unknown tokens).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from orchestra.agent.chat_format import CHAT_TEMPLATE, IM_END, SPECIAL_TOKENS

PAD = "<pad>"
# `tokenizer_class` of a tokenizer that is its tokenizer.json and nothing more (what
# `train_tokenizer` saves): transformers 5 writes TokenizersBackend, 4 PreTrainedTokenizerFast.
PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


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


def load_tokenizer(path: str):
  """The Hugging Face tokenizer saved in the folder `path`, from local files only.

  A plain fast tokenizer (`PLAIN_TOKENIZER_CLASSES`) loads through that class, the one
  `AutoTokenizer` would pick; any other class through `AutoTokenizer`, which first imports
  transformers' model registry and, where torch is installed, torch (measured on 2 CPU
  cores: `import torch` alone 2.2-2.5 s; importing `AutoTokenizer` 4.7 s against 2.3 s for
  `PreTrainedTokenizerFast`). Raises OSError or ValueError as `AutoTokenizer` does.
  """
  config = os.path.join(path, "tokenizer_config.json")
  tokenizer_class = None
  if os.path.isfile(config):
    with open(config) as f:
      tokenizer_class = json.load(f).get("tokenizer_class")
  if tokenizer_class in PLAIN_TOKENIZER_CLASSES:
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(path, local_files_only=True)
