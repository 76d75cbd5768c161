"""Which episodes of a group are scored and trained on (DESIGN section 2), by hand."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from orchestra.agent.episode import Trajectory, Turn
from orchestra.train.loop import score_group
from orchestra.train.setup_base import Rollout


class Setup:
  tool_names = ("expert",)

  def __init__(self, invalid_format):
    self.config = ConfigDict({"rl": {"invalid_format": invalid_format}})


def rollout(finish_reason, correct, cost, format_ok=True):
  traj = Trajectory.from_prompt([1, 2], finish_reason=finish_reason)
  traj.turns.append(Turn("", [], "", 0.0, 0.0, [] if format_ok else ["bad json"], 0, "stop"))
  traj.tool_calls, traj.cost_usd, traj.latency_s = {"expert": 1}, cost, 1.0
  return Rollout(traj, correct)


@pytest.mark.parametrize("mode", ["zero", "drop"])
def test_engine_errors_are_dropped_and_running_out_of_turns_is_wrong(mode):
  group = [rollout("answer", True, 1.0), rollout("answer", True, 3.0),
           rollout("max_turns", False, 0.0), rollout("max_tokens", False, 0.0),
           rollout("engine_error", True, 0.0), rollout("user_error", True, 0.0)]
  preference = np.array([0.0, 1.0, 1.0, 0.0])          # (expert, outcome, cost, latency)
  rewards, keep, correct = score_group(Setup(mode), preference, group)
  # Lost episodes (ours, not the policy's) leave the group, whatever the format mode;
  # running out of turns or tokens stays in, as wrong.
  assert keep.tolist() == [True, True, True, True, False, False]
  assert correct.tolist() == [True, True, False, False, False, False]
  # min-max over the kept four: cost column [-1, -3, 0, 0] -> [2/3, 0, 1, 1]; outcome [1, 1, 0, 0]
  np.testing.assert_allclose(rewards, [1 + 2 / 3, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_invalid_format_drop_or_zero():
  group = [rollout("answer", True, 1.0), rollout("answer", True, 2.0, format_ok=False),
           rollout("answer", False, 3.0)]
  preference = np.array([0.0, 1.0, 0.0, 0.0])
  _, keep, _ = score_group(Setup("drop"), preference, group)
  assert keep.tolist() == [True, False, True]
  rewards, keep, correct = score_group(Setup("zero"), preference, group)
  assert keep.tolist() == [True, True, True] and correct.tolist() == [True, False, False]
  np.testing.assert_allclose(rewards, [1.0, 0.0, 0.0])


def test_every_loss_field_of_the_config_reaches_the_loss():
  import importlib.util
  import os
  from orchestra.train.setup_base import policy_loss_config
  path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny_cpu.py")
  spec = importlib.util.spec_from_file_location("tiny_cpu", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.rl.loss.update(dict(clip_low=0.1, clip_high=0.3, dual_clip=3.0, tis_cap=2.0,
                             kl_coef=0.5, kl_estimator="k3", entropy_coef=0.02))
  config.episode.temperature = 0.7
  loss = policy_loss_config(config)
  assert (loss.clip_low, loss.clip_high, loss.dual_clip, loss.tis_cap, loss.kl_coef,
          loss.kl_estimator, loss.entropy_coef, loss.temperature) == (
              0.1, 0.3, 3.0, 2.0, 0.5, "k3", 0.02, 0.7)
