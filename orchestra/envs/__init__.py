"""Task environments: `ToolScaleMini`, the seeded offline procedural one, and its SIMULATED experts."""

from orchestra.envs.toolscale_mini import SimulatedExpert, Task, ToolScaleMini, default_experts

__all__ = ["SimulatedExpert", "Task", "ToolScaleMini", "default_experts"]
