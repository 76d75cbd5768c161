"""Synthesis with an LLM: any OpenAI-compatible endpoint writes domains, tools and tasks.

  python launch/synthesize.py --config configs/synth_llm.py --out data/synth_llm \
      --config.llm.url=https://api.openai.com/v1 --config.llm.model=gpt-5-mini \
      --config.llm.api_key_env=OPENAI_API_KEY --config.llm.price_in=0.25 --config.llm.price_out=2

Replies are JSON checked against each stage's schema and then executed by verification
like procedural ones; the report gives drops by reason and the cost.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  return ConfigDict(dict(
      generator="llm",           # prompts in orchestra/synth/prompts/<stage>.md
      seed=0,                    # the train/test split's shuffle
      num_domains=8,
      tasks_per_domain=30,       # verified tasks kept per domain
      oversample=1.5,            # task drafts asked for per task kept
      test_fraction=0.2,
      concurrency=4,             # domains in flight
      llm=ConfigDict(dict(
          url="",                # OpenAI-compatible root including /v1
          model="",
          api_key_env="",        # environment variable holding the key ("" for a local server)
          price_in=0.0,          # USD per 1M prompt tokens (the cost report)
          price_out=0.0,         # USD per 1M completion tokens
          max_concurrent_requests=8,
          temperature=0.7,
          max_tokens=8192,
          retries=2,             # re-asks after a malformed reply before dropping the stage
          tasks_per_request=10,
          prompts_dir="",        # "" = orchestra/synth/prompts
      )),
  ))
