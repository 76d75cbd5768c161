"""Orchestra: train small orchestrator models with multi-objective RL (ToolOrchestra) in JAX."""

__version__ = "0.1.0"
