"""ToolScale-style synthesis: whole tau2-format domains and verified tool-call tasks.

  python launch/synthesize.py --config configs/synth_offline.py --out data/synth

  drafts.py         task drafts, SynthDrop (a drop and its reason), Spend (LLM cost)
  themes.py         the procedural generator's catalogue of businesses
  procedural.py     the offline generator: seeded templates, no model
  llm_generator.py  the LLM generator: prompts/<stage>.md to an OpenAI-compatible endpoint
  verify.py         keep a task only if its gold actions execute and grade as they should
  pipeline.py       the resumable stages, the domain folders, the report
  run.py            config -> settings and generator -> pipeline

Synthesised domains are declarative (orchestra/envs/domains/declarative.py): their tools
are specs our interpreter runs, so nothing a model writes is ever executed.
"""
