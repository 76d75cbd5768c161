"""The policy as the agent of a conversational episode, recording the tokens RL trains on.

`run_conversation` (orchestra/envs/domains/conversation.py) drives a tau2-style episode:
it calls `agent.respond(system, history, tools)` once per agent turn with the whole
conversation so far. `EngineAgent` answers from an engine (the in-process `JaxEngine`, a
`ScriptedEngine` replaying a teacher, or vLLM through `HTTPEngine`) and keeps one
append-only token sequence, exactly like `run_episode`:

    render_prompt(system + tools, greeting, first user message)        loss_mask 0
    policy turn (the engine's own tokens, ending in <|im_end|>)          loss_mask 1
    "\\n" + the messages that arrived since (tool results, user reply)
        rendered in the chat format, then "<|im_start|>assistant\\n"     loss_mask 0
    policy turn ...

Earlier turns are never re-tokenised, so the behaviour log-probs stay aligned with the
tokens the learner scores. A turn with tool-call blocks that do not parse never reaches
the environment: the agent appends the format error as an observation and generates
again (it still counts as a turn, and marks the trajectory `format_ok = False`). A turn
without tool-call blocks is a message to the user.

Limits: `EpisodeConfig.max_turns` policy turns and `max_total_tokens`; hitting either
raises `AgentBudgetExhausted`, which ends the conversation as an agent error (reward 0)
and sets the trajectory's `finish_reason` to "max_turns" / "max_tokens".
"""

from __future__ import annotations

from orchestra.agent.chat_format import TOOL_CALL_OPEN, observation_text, render_prompt
from orchestra.agent.episode import (EpisodeConfig, Trajectory, Turn, append_tokens, encode,
                                     generate_turn, truncate_tokens)
from orchestra.agent.parser import parse_turn
from orchestra.engines.base import SamplingParams
from orchestra.envs.domains.conversation import EpisodeResult, Reply


class AgentBudgetExhausted(RuntimeError):
  """The policy used up its turns or its token budget."""


class EngineAgent:
  """An engine as a tau2 agent; `trajectory` holds the tokens, masks and log-probs.

  Args:
    engine: anything with `async generate(prompt_ids, SamplingParams) -> Completion`.
    tokenizer: the policy's tokenizer (chat-format special tokens included).
    sampling: per-turn sampling (max_tokens is the per-turn cap).
    config: turn/token limits, observation truncation, the policy's price and latency.
  """

  def __init__(self, engine, tokenizer, sampling: SamplingParams,
               config: EpisodeConfig = EpisodeConfig()):
    self.engine, self.tokenizer, self.sampling, self.config = engine, tokenizer, sampling, config
    self.trajectory: Trajectory | None = None
    self._seen = 0                   # history messages already in the token sequence
    self._pending_note = ""          # a format error to show with the next observation

  async def respond(self, system: str, history: list[dict], tools: list[dict]) -> Reply:
    self._extend(system, history, tools)
    prompt_tokens = completion_tokens = 0
    cost = latency = 0.0
    while True:
      turn, completion_len, prompt_len = await self._generate()
      prompt_tokens += prompt_len
      completion_tokens += completion_len
      cost += turn.cost_usd
      latency += turn.latency_s
      parsed = parse_turn(turn.text, {t["function"]["name"] for t in tools})
      # Without a <tool_call> block the turn is a message to the user, not a format error.
      errors = parsed.errors if TOOL_CALL_OPEN in turn.text else []
      turn.format_errors = errors + turn.format_errors
      if errors and not parsed.calls:
        # Nothing runnable: the environment never sees it; the policy reads the error.
        turn.observation = "Format error: " + "; ".join(errors)
        self._append_text(observation_text(turn.observation))
        continue
      self._pending_note = "Format error: " + "; ".join(errors) if errors else ""
      calls, counts = [], self.trajectory.tool_calls
      for call in parsed.calls:
        counts[call.name] = counts.get(call.name, 0) + 1
        calls.append({"id": f"call_{sum(counts.values())}", "name": call.name,
                      "arguments": call.arguments})
        turn.calls.append({"name": call.name, "arguments": call.arguments})
      self._seen = len(history) + 1      # run_conversation appends this reply next
      return Reply(parsed.content, calls, prompt_tokens, completion_tokens, cost, latency)

  def finish(self, episode: EpisodeResult) -> Trajectory:
    """Closes the trajectory with the conversation's outcome and accounting.

    cost / latency = every policy turn's (including retried malformed turns and a turn
    cut off by a limit, which the conversation never saw) + the extra tools' (experts)
    + the domain tools' latency. `finish_reason` is the conversation's termination
    unless the agent's own limit or its engine ended it. A conversation that failed
    before the agent's first turn gives an empty trajectory (nothing to learn from).
    """
    if self.trajectory is None:
      self.trajectory = Trajectory.from_prompt([])
    traj = self.trajectory
    if traj.finish_reason not in ("max_turns", "max_tokens", "engine_error"):
      traj.finish_reason, traj.error = episode.termination, episode.error
    traj.cost_usd = sum(t.cost_usd for t in traj.turns) + episode.expert_cost_usd
    traj.latency_s = (sum(t.latency_s for t in traj.turns) + episode.expert_latency_s
                      + episode.tool_latency_s)
    return traj

  # ------------------------------------------------------------------ token sequence

  def _extend(self, system: str, history: list[dict], tools: list[dict]) -> None:
    """Appends the messages the policy has not seen yet (all of them on the first turn)."""
    limit = self.config.max_observation_tokens
    new = [self._shown(m, limit) for m in history[self._seen:]]
    if self.trajectory is None:
      self.trajectory = Trajectory.from_prompt(encode(
          self.tokenizer, render_prompt([{"role": "system", "content": system}] + new, tools)))
    else:
      if self._pending_note:
        new.append({"role": "tool", "content": self._pending_note})
        self._pending_note = ""
      self._append_text("\n" + render_prompt(new))
    self._seen = len(history)

  def _shown(self, message: dict, limit: int) -> dict:
    """A history message as the policy reads it: tool results cut to the token limit."""
    if message["role"] == "tool":
      return {"role": "tool", "content": truncate_tokens(self.tokenizer, message["content"], limit)}
    return {"role": message["role"], "content": message.get("content") or ""}

  def _append_text(self, text: str) -> None:
    ids = encode(self.tokenizer, text)
    append_tokens(self.trajectory, ids, [0.0] * len(ids), policy=False)

  async def _generate(self) -> tuple[Turn, int, int]:
    """One policy turn appended to the sequence; raises AgentBudgetExhausted at a limit."""
    traj, cfg = self.trajectory, self.config
    if len(traj.turns) >= cfg.max_turns:
      traj.finish_reason = "max_turns"
      raise AgentBudgetExhausted(f"the policy used its {cfg.max_turns} turns")
    if len(traj.token_ids) >= cfg.max_total_tokens:
      traj.finish_reason = "max_tokens"
      raise AgentBudgetExhausted(f"the episode reached {cfg.max_total_tokens} tokens")
    prompt_tokens = len(traj.token_ids)
    turn, completion = await generate_turn(self.engine, self.tokenizer, traj, self.sampling, cfg)
    return turn, len(completion.token_ids), prompt_tokens
