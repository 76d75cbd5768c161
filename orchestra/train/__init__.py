"""The training run: setup (env, tokenizer, tools), the SFT + RL loop, batching."""
