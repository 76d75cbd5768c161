"""Pure RL math: advantages and per-token losses (no I/O, no parameters)."""

from orchestra.rl.advantages import gae, group_advantages, rloo_advantages
from orchestra.rl.losses import (aggregate, aggregation_weights, clipped_policy_loss, clipped_value_loss, kl_penalty,
                                 token_entropy, token_logprobs)

__all__ = ["aggregate", "aggregation_weights", "clipped_policy_loss", "clipped_value_loss", "gae", "group_advantages",
           "kl_penalty", "rloo_advantages", "token_entropy", "token_logprobs"]
