"""The orchestrator's side of an episode: chat format, tool-call parsing, the episode loop."""

from orchestra.agent.chat_format import CHAT_TEMPLATE, observation_text, render_prompt
from orchestra.agent.episode import EpisodeConfig, Trajectory, Turn, run_episode, run_episodes
from orchestra.agent.parser import ParsedTurn, ToolCall, parse_turn
from orchestra.agent.preferences import preference_instruction

__all__ = ["CHAT_TEMPLATE", "EpisodeConfig", "ParsedTurn", "ToolCall", "Trajectory", "Turn",
           "observation_text", "parse_turn", "preference_instruction", "render_prompt", "run_episode", "run_episodes"]
