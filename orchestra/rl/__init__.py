"""Pure RL math: advantages and per-token losses (no I/O, no parameters)."""

from orchestra.rl.advantages import (gae, group_advantages, group_estimates, rloo_advantages,
                                     terminal_rewards, whiten)
from orchestra.rl.losses import (aggregate, aggregation_weights, batch_totals,
                                 clipped_policy_loss, clipped_value_loss, kl_penalty,
                                 token_entropy, token_logprobs)

__all__ = ["aggregate", "aggregation_weights", "batch_totals", "clipped_policy_loss",
           "clipped_value_loss", "gae", "group_advantages", "group_estimates", "kl_penalty",
           "rloo_advantages", "terminal_rewards", "token_entropy", "token_logprobs", "whiten"]
