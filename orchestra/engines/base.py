"""The engine contract: token ids in, token ids + log-probs + weight version out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol


class EngineError(RuntimeError):
  """A generation request that failed (dead server, bad response); says why."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_tokens: int = 256
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0                              # 0 = off
  stop_token_ids: tuple[int, ...] = ()
  seed: int | None = None                     # None: a fresh seed per request

  def __post_init__(self):
    if self.max_tokens < 1:
      raise ValueError(f"max_tokens={self.max_tokens} must be >= 1")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(f"invalid sampling settings {self}")


@dataclasses.dataclass
class Completion:
  token_ids: list[int]                        # generated tokens (a stop token included)
  logprobs: list[float]                       # log p of each token under the sampling distribution
  finish_reason: str                          # "stop" | "length"
  weight_version: int                         # version of the weights that produced it


class Engine(Protocol):
  weight_version: int

  async def generate(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> Completion:
    ...

  async def update_weights(self, source: Any, version: int) -> None:
    """Loads new weights (params in process, or an exported HF folder) as `version`."""
    ...
