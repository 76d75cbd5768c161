"""The settings of a QA benchmark run, each defined once with its help (and so its flag).

  OrchestratorSpec  who orchestrates and at what price (`--orchestrator`, `--base_url`, ...)
  RunSettings       turn, token, time and concurrency limits (`--max_turns`, ...)
  JudgeSpec         the optional LLM judge (`--judge_base_url`, ...: prefix "judge_")

`launch/eval.py` generates its flags from these fields (`settings_flags.define_flags`);
BenchmarkError is the error a user can fix in any of them.
"""

from __future__ import annotations

import dataclasses

from orchestra.envs.qa_prompts import SYSTEM_PROMPT
from orchestra.eval.settings_flags import setting

ORCHESTRATORS = ("checkpoint", "chat", "no_tools")
JUDGE_PREFIX = "judge_"


class BenchmarkError(ValueError):
  """A setting, file or endpoint problem a user can fix; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class OrchestratorSpec:
  """Who orchestrates and at what price (prices: the orchestrator's own tokens, USD per 1M)."""
  kind: str = setting(
      "checkpoint", "checkpoint: our policy on vLLM/launch/serve.py (token-id episodes); chat: "
      "any OpenAI-compatible model with tools; no_tools: that model answering directly",
      flag="orchestrator", choices=ORCHESTRATORS)
  base_url: str | None = setting(      # for `checkpoint` the /v1 may be left out
      None, "orchestrator endpoint, e.g. http://127.0.0.1:8000/v1")
  model: str | None = setting(None, "orchestrator model name as the endpoint serves it")
  api_key_env: str | None = setting(
      None, "env variable with the orchestrator's API key (none: an open server)")
  tokenizer_dir: str | None = setting(
      None, "checkpoint: the policy's HF tokenizer folder (its model_dir)", flag="tokenizer")
  price_in_per_1m: float = setting(0.0, "orchestrator USD per 1M prompt tokens", flag="price_in")
  price_out_per_1m: float = setting(0.0, "orchestrator USD per 1M completion tokens",
                                    flag="price_out")
  max_tokens: int = setting(2048, "orchestrator tokens per turn")
  temperature: float | None = setting(
      None, "orchestrator sampling temperature (default: 1.0 for checkpoints, the endpoint's "
      "default for chat models)")
  label: str | None = setting(None, "row name in reports (default: '<model> + tools')")

  def default_label(self) -> str:
    if self.label:
      return self.label
    return f"{self.model} (no tools)" if self.kind == "no_tools" else f"{self.model} + tools"


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Limits of one item's run, and how many items run at once."""
  max_turns: int = setting(30, "orchestrator turns per item")
  max_total_tokens: int = setting(32_768, "checkpoint: prompt + all turns + observations")
  max_observation_tokens: int = 2048       # checkpoint: longer tool outputs are cut
  max_observation_chars: int = 12_000      # chat: longer tool outputs are cut
  tool_timeout_s: float = setting(120.0, "a tool call slower than this is an error")
  concurrency: int = setting(8, "items in flight at once")
  seed: int = setting(0, "seed of --sample and of item i's sampling (seed + i)")
  system_prompt: str = SYSTEM_PROMPT


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
  """An LLM judge endpoint; replies are cached in `cache_dir` (default OUT_DIR/judge_cache)."""
  base_url: str | None = setting(None, "LLM judge endpoint (none: rule-based grading)")
  model: str | None = setting(None, "LLM judge model name")
  api_key_env: str | None = setting(None, "env variable with the judge's API key")
  price_in_per_1m: float = setting(0.0, "judge USD per 1M prompt tokens", flag="price_in")
  price_out_per_1m: float = setting(0.0, "judge USD per 1M completion tokens", flag="price_out")
  max_tokens: int = setting(1024, "judge reply budget")
  temperature: float | None = setting(   # None or < 0: the endpoint's default
      0.0, "judge temperature (< 0: omit it, for reasoning models that accept only their "
      "default)")
  cache_dir: str | None = setting(
      None, "judge reply cache folder (default: OUT/judge_cache)", flag="cache")
