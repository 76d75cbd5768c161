"""Builds a `ChatEndpoint` from settings: the one place whose errors name the setting at fault.

  endpoint = endpoint_from_spec(EndpointSpec(url, model, "OPENAI_API_KEY"),
                                setting_names("--agent_"))
  # JudgeConfigError: "--agent_url and --agent_model are required (...)", or
  # "--agent_api_key_env: environment variable OPENAI_API_KEY (...) is not set; ..."

Callers turn the JudgeConfigError into their own error type (a usage error, a config error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from orchestra.eval.judge import ChatEndpoint, JudgeConfigError


@dataclasses.dataclass(frozen=True)
class EndpointSpec:
  """An OpenAI-compatible chat endpoint; prices in USD per 1M prompt / completion tokens.

  `OrchestratorSpec` and `JudgeSpec` have the same fields and are accepted as specs too.
  """
  base_url: str | None
  model: str | None
  api_key_env: str | None = None
  price_in_per_1m: float = 0.0
  price_out_per_1m: float = 0.0


def setting_names(prefix: str, url: str = "url") -> dict[str, str]:
  """The user's names of an endpoint's settings `<prefix>url`, `<prefix>model`,
  `<prefix>api_key_env`, `<prefix>price_in`, `<prefix>price_out` (`url`: that one's suffix)."""
  return {"base_url": prefix + url, "model": prefix + "model",
          "api_key_env": prefix + "api_key_env", "price_in_per_1m": prefix + "price_in",
          "price_out_per_1m": prefix + "price_out"}


def endpoint_from_spec(spec: Any, names: Mapping[str, str]) -> ChatEndpoint:
  """The `ChatEndpoint` of `spec` (fields as `EndpointSpec`); nothing is sent.

  Raises JudgeConfigError naming the setting by `names` (see `setting_names`) when the URL or
  model is missing, the API key's environment variable is not set, or a value is invalid.
  """
  if not spec.base_url or not spec.model:
    raise JudgeConfigError(f"{names['base_url']} and {names['model']} are required (an "
                           "OpenAI-compatible endpoint root including /v1, and the model name "
                           "it serves)", "model" if spec.base_url else "base_url")
  try:
    return ChatEndpoint(spec.base_url, spec.model, api_key_env=spec.api_key_env,
                        price_in_per_1m=spec.price_in_per_1m,
                        price_out_per_1m=spec.price_out_per_1m)
  except JudgeConfigError as e:
    raise JudgeConfigError(f"{names[e.setting]}: {e}", e.setting) from None
