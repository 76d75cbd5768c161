"""From a synthesis config (configs/synth_*.py) to a finished run: settings, generator, report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from ml_collections import ConfigDict

from orchestra.synth.pipeline import SynthSettings, synthesize
from orchestra.synth.procedural import ProceduralGenerator

GENERATORS = ("procedural", "llm")
LLM_FIELDS = ("url", "model", "api_key_env", "price_in", "price_out", "max_concurrent_requests",
              "temperature", "max_tokens", "retries", "tasks_per_request", "prompts_dir")


class SynthConfigError(ValueError):
  """A synthesis config that cannot run; the message names the field."""


def settings_from_config(config: ConfigDict) -> SynthSettings:
  """The pipeline settings; refuses unknown fields and fields the generator would not read."""
  fields = {f.name for f in dataclasses.fields(SynthSettings)}
  if config.get("generator") not in GENERATORS:
    raise SynthConfigError(f"config.generator={config.get('generator')!r}: expected one of "
                           f"{GENERATORS}")
  allowed = fields | {"generator"} | ({"llm"} if config.generator == "llm" else set())
  unknown = sorted(set(config) - allowed)
  if unknown:
    raise SynthConfigError(f"config fields {['config.' + k for k in unknown]} are not read by "
                           f"the {config.generator} generator; remove them")
  if config.generator == "llm":
    llm = config.get("llm") or ConfigDict()
    wrong = sorted(set(llm) ^ set(LLM_FIELDS))
    if wrong:
      raise SynthConfigError(f"config.llm must have exactly the fields {LLM_FIELDS}; "
                             f"differs in {wrong}")
  try:
    return SynthSettings(**{k: config[k] for k in fields if k in config})
  except ValueError as e:
    raise SynthConfigError(f"config: {e}") from None


def make_generator(config: ConfigDict):
  """The procedural generator, or the LLM generator over config.llm's endpoint."""
  if config.generator == "procedural":
    return ProceduralGenerator(config.seed)
  from orchestra.eval.endpoints import EndpointSpec, endpoint_from_spec, setting_names
  from orchestra.eval.judge import JudgeConfigError
  from orchestra.synth.llm_generator import PROMPTS_DIR, LLMGenerator
  llm = config.llm
  try:
    endpoint = endpoint_from_spec(
        EndpointSpec(llm.url, llm.model, llm.api_key_env or None, llm.price_in, llm.price_out),
        setting_names("config.llm."))
  except JudgeConfigError as e:
    raise SynthConfigError(str(e)) from None
  return LLMGenerator(endpoint, llm.prompts_dir or PROMPTS_DIR,
                      max_concurrent_requests=llm.max_concurrent_requests,
                      temperature=llm.temperature, max_tokens=llm.max_tokens,
                      retries=llm.retries, tasks_per_request=llm.tasks_per_request)


def run_synthesis(config: ConfigDict, out: str | Path) -> dict:
  """Runs (or resumes) the pipeline into `out` and returns the report."""
  settings = settings_from_config(config)
  generator = make_generator(config)

  async def main():
    try:
      return await synthesize(generator, settings, out)
    finally:
      endpoint = getattr(generator, "endpoint", None)
      if endpoint is not None:
        await endpoint.aclose()

  return asyncio.run(main())


def format_report(report: dict) -> str:
  """The report as a few readable lines."""
  lines = [f"domains kept {report['domains']['kept']}/{report['domains']['proposed']}, "
           f"tasks kept {report['tasks']['kept']} of {report['tasks']['examined']} drafts "
           f"verified ({report['tasks']['proposed']} proposed)",
           f"LLM: {report['llm']['requests']} requests, ${report['llm']['cost_usd']:.4f}"]
  for stage, reasons in report["drops"].items():
    lines.append(f"dropped at {stage}: {json.dumps(reasons)}")
  for name, d in report["per_domain"].items():
    lines.append(f"  {name}: {d['tables']} tables, {d['rows']} rows, {d['tools']} tools, "
                 f"{d['tasks']} tasks")
  return "\n".join(lines)
