"""Which of vLLM's request fields this server honours, and the 400s for the rest.

Two ways a request could do something other than what it asks, both refused:
  - a field vLLM does not know: vLLM ignores it silently, so a client relying on it
    would get nothing there either (`check_known`, only in `strict` mode: tests);
  - a field vLLM knows and honours, but this server does not (stop strings, penalties,
    top log-probs, structured output, ...): answering as if it were absent would sample
    differently from vLLM without a word (`check_supported`, always). Each such field
    is accepted only at its neutral value, the one that asks for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

# Request fields vLLM 0.33 knows (its CompletionRequest / ChatCompletionRequest).
_COMMON = frozenset({
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "seed", "stop",
    "stop_token_ids", "stream", "stream_options", "logprobs", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logit_bias", "user", "min_tokens",
    "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
    "include_stop_str_in_output", "return_token_ids", "return_weight_versions",
    "prompt_logprobs", "priority", "request_id", "truncate_prompt_tokens", "truncation_side",
    "add_special_tokens", "response_format", "structured_outputs", "allowed_token_ids",
    "bad_words", "logprob_token_ids", "thinking_token_budget", "use_beam_search",
    "repetition_detection", "echo"})
COMPLETION_FIELDS = _COMMON | {"prompt", "suffix"}
CHAT_FIELDS = _COMMON | {"messages", "tools", "tool_choice", "parallel_tool_calls",
                         "top_logprobs", "max_completion_tokens", "chat_template",
                         "chat_template_kwargs", "add_generation_prompt",
                         "continue_final_message", "documents", "reasoning_effort",
                         "include_reasoning"}


def _absent(value) -> bool:
  return value is None


def _no_items(value) -> bool:
  return value is None or value == [] or value == {}


def _equals(*neutral) -> Callable[[Any], bool]:
  return lambda value: value is None or any(value == n and type(value) is type(n)
                                            for n in neutral)


def _free_text(value) -> bool:
  return value is None or value == {"type": "text"}


# field -> (is the value neutral?, what this server does instead). Neutral values are
# vLLM's defaults: an ordinary client (the `openai` package sends only what it is given)
# is never refused.
_COMMON_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stop": (_no_items, "no stop strings; stop_token_ids works"),
    "min_p": (_equals(0, 0.0), "no min-p filter; top_p and top_k work"),
    "presence_penalty": (_equals(0, 0.0), "no penalties"),
    "frequency_penalty": (_equals(0, 0.0), "no penalties"),
    "repetition_penalty": (_equals(1, 1.0), "no penalties"),
    "logit_bias": (_no_items, "no logit bias"),
    "bad_words": (_no_items, "no banned words"),
    "allowed_token_ids": (_absent, "the whole vocabulary"),
    "min_tokens": (_equals(0), "no minimum length"),
    "prompt_logprobs": (_absent, "no prompt log-probs"),
    "logprob_token_ids": (_absent, "the sampled tokens' log-probs only"),
    "truncate_prompt_tokens": (_absent, "prompts are never truncated (a long one is a 400)"),
    "priority": (_equals(0), "first come, first served"),
    "stream_options": (_no_items, "no streaming"),
    "echo": (_equals(False), "the prompt is not echoed"),
    "response_format": (_free_text, "free text only"),
    "structured_outputs": (_absent, "free text only"),
    "thinking_token_budget": (_absent, "no thinking budget"),
    "use_beam_search": (_equals(False), "sampling only"),
    "repetition_detection": (_absent, "no repetition detection"),
}
_COMPLETION_UNSUPPORTED = {
    **_COMMON_UNSUPPORTED,
    "logprobs": (_equals(0), "logprobs 0 (the sampled tokens' log-probs) only; no top "
                             "alternatives"),
    "suffix": (_absent, "no suffix"),
}
_CHAT_UNSUPPORTED = {
    **_COMMON_UNSUPPORTED,
    "top_logprobs": (_equals(0), "the sampled tokens' log-probs only"),
    "tool_choice": (_equals("auto", "none"), "tool_choice auto or none (no forced calls)"),
    "chat_template": (_absent, "the model's own chat template"),
    "reasoning_effort": (_absent, "set chat_template_kwargs (e.g. enable_thinking)"),
}
_UNSUPPORTED = {"completions": _COMPLETION_UNSUPPORTED, "chat": _CHAT_UNSUPPORTED}


def check_known(body: dict, known: frozenset[str], path: str) -> None:
  """A 400 naming the fields of `body` that vLLM's request schema does not have."""
  unknown = sorted(set(body) - known)
  if unknown:
    raise HTTPException(400, f"{path}: fields {unknown} are not in vLLM's request schema "
                             "(vLLM would ignore them silently; strict mode refuses)")


def check_supported(body: dict, route: str) -> None:
  """A 400 for the first field vLLM would honour but this server cannot (`route`:
  "completions" or "chat"), unless it is at its neutral value."""
  for name, (neutral, instead) in _UNSUPPORTED[route].items():
    if name in body and not neutral(body[name]):
      raise HTTPException(400, f"{name}={body[name]!r} is not supported by this server "
                               f"(vLLM honours it; here: {instead}); leave it out")
  if body.get("spaces_between_special_tokens") is False and body.get("skip_special_tokens") is False:
    raise HTTPException(400, "spaces_between_special_tokens=False is not supported by this "
                             "server with skip_special_tokens=False (vLLM honours it; here: "
                             "the tokenizer's own decoding); leave it out")
