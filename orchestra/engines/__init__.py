"""Token generation: the in-process JAX engine and HTTP engines (our server, vLLM)."""

from orchestra.engines.base import Completion, Engine, EngineError, SamplingParams
from orchestra.engines.jax_engine import JaxEngine

__all__ = ["Completion", "Engine", "EngineError", "JaxEngine", "SamplingParams"]
