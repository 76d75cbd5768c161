"""The synthesis pipeline: domains -> schema -> database -> tools -> policy -> tasks -> folders.

  report = asyncio.run(synthesize(generator, SynthSettings(...), "data/synth"))

Stages run per domain (domains concurrently, up to `settings.concurrency`). Each stage's
output is checked before the next uses it -- the schema parses, the database fits the
schema, the tool specs name only what exists and give valid function schemas, every
task executes (verify.py) -- and a failure drops the domain or the task with its reason.

Resumable: each stage writes `<out>/work/<domain>/<stage>.json` (its result or its drop,
and what it cost) and a rerun reads it instead of running the stage again; a finished
domain folder is not rewritten. A stage lost to an unreachable endpoint is not written,
so the rerun tries it again. Output: `<out>/domains/<domain>/` with schema.json,
tools.json, db.json, policy.md, tasks.json and split_tasks.json (load it with
`load_domain(name, out)`), and `<out>/report.json`: counts, drops by stage and reason,
and LLM cost, summed over every stage file (so a resumed run reports the whole run).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import jsonschema

from orchestra.envs.domains import Task
from orchestra.envs.domains.declarative import declarative_domain, parse_tools
from orchestra.envs.domains.tables import NAME_RE, Schema, SpecError
from orchestra.synth.drafts import DRAFT_SCHEMA, Spend, SynthDrop, task_from_draft
from orchestra.synth.verify import Deduplicator, verify_task

STAGES = ("schema", "database", "tools", "policy", "tasks")
TRANSIENT = ("endpoint_error",)       # drops a rerun should retry: not written to stage files
DOMAIN_FILES = ("schema.json", "tools.json", "db.json", "policy.md", "tasks.json",
                "split_tasks.json")


class Generator(Protocol):
  """Makes each stage's raw output; the pipeline checks it. Raise SynthDrop to drop.

  `tasks` may return, among the drafts, {"dropped": reason, "detail": ...} entries for
  drafts it lost (e.g. a failed request), so they are counted with their reason.
  """

  async def domain_ideas(self, n: int, spend: Spend) -> list[dict]: ...
  async def schema(self, idea: dict, spend: Spend) -> dict: ...
  async def database(self, idea: dict, schema: dict, spend: Spend) -> dict: ...
  async def tools(self, idea: dict, schema: dict, spend: Spend) -> list[dict]: ...
  async def policy(self, idea: dict, schema: dict, tools: list[dict], spend: Spend) -> str: ...
  async def tasks(self, idea: dict, schema: dict, db: dict, tools: list[dict], policy: str,
                  n: int, spend: Spend) -> list[dict]: ...


@dataclasses.dataclass(frozen=True)
class SynthSettings:
  """How much to make. Fields as in configs/synth_offline.py."""

  seed: int = 0
  num_domains: int = 8
  tasks_per_domain: int = 50
  oversample: float = 2.0           # task drafts proposed per task kept (at most)
  test_fraction: float = 0.2
  concurrency: int = 4              # domains in flight

  def __post_init__(self):
    if self.num_domains < 1 or self.tasks_per_domain < 1 or self.concurrency < 1:
      raise ValueError("num_domains, tasks_per_domain and concurrency must be >= 1")
    if self.oversample < 1:
      raise ValueError(f"oversample={self.oversample} must be >= 1")
    if not 0 <= self.test_fraction < 1:
      raise ValueError(f"test_fraction={self.test_fraction} must be in [0, 1)")


def _write_json(path: Path, obj: Any) -> None:
  """Writes atomically (temp file + rename), so a kill never leaves half a stage file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
  os.replace(tmp, path)


async def _stage(path: Path, make: Callable[[Spend], Awaitable[Any]]) -> dict:
  """The stage file at `path`, made by `make` when absent: {"result"|"drop", "spend"}."""
  if path.is_file():
    return json.loads(path.read_text())
  spend = Spend()
  try:
    record = {"result": await make(spend)}
  except SynthDrop as drop:
    record = {"drop": {"reason": drop.reason, "detail": drop.detail}}
  record["spend"] = dataclasses.asdict(spend)
  if record.get("drop", {}).get("reason") not in TRANSIENT:
    _write_json(path, record)
  return record


# ------------------------------------------------------------------ stage checks

def _checked_schema(raw: Any, idea: dict) -> dict:
  if isinstance(raw, dict):
    raw = {**raw, "domain": idea["name"], "description": raw.get("description")
           or idea.get("description", "")}
  try:
    return Schema.parse(raw).to_json()
  except SpecError as e:
    raise SynthDrop("invalid_schema", str(e)) from None


def _checked_database(raw: Any, schema: dict) -> dict:
  try:
    Schema.parse(schema).check_db(raw)
  except SpecError as e:
    raise SynthDrop("invalid_database", str(e)) from None
  return raw


def _checked_tools(raw: Any, schema: dict) -> list[dict]:
  try:
    specs = parse_tools(raw, Schema.parse(schema))
  except SpecError as e:
    raise SynthDrop("invalid_tools", str(e)) from None
  for spec in specs:
    try:
      jsonschema.Draft202012Validator.check_schema(spec.openai_schema()["function"]["parameters"])
    except jsonschema.SchemaError as e:
      raise SynthDrop("invalid_function_schema", f"{spec.name}: {e.message}") from None
  return raw


def _checked_policy(raw: Any) -> str:
  if not isinstance(raw, str) or len(raw.strip()) < 20:
    raise SynthDrop("empty_policy", "the policy is not a text of at least 20 characters")
  return raw


async def _checked_tasks(drafts: Any, parts: dict, name: str, keep: int) -> dict:
  """Verifies drafts in order until `keep` are kept; records each drop and how many drafts
  were examined (the rest are left unused)."""
  if not isinstance(drafts, list):
    raise SynthDrop("malformed_tasks", "expected a list of task drafts")
  domain = declarative_domain(parts["schema"], parts["tools"], parts["database"],
                              parts["policy"], [], {})
  dedupe, kept, drops, examined = Deduplicator(), [], [], 0
  for i, draft in enumerate(drafts):
    if len(kept) == keep:
      break
    examined += 1
    if isinstance(draft, dict) and "dropped" in draft:
      drops.append({"draft": i, "reason": draft["dropped"], "detail": draft.get("detail", "")})
      continue
    task_id = f"{name}_{len(kept):03d}"
    try:
      jsonschema.validate(draft, DRAFT_SCHEMA)
      row = task_from_draft(name, task_id, draft)
      task = Task.model_validate(row)
    except (jsonschema.ValidationError, ValueError) as e:
      drops.append({"draft": i, "reason": "malformed_task", "detail": str(e).splitlines()[0]})
      continue
    drop = await verify_task(domain, task) or dedupe.check(task)
    if drop is not None:
      drops.append({"draft": i, "reason": drop.reason, "detail": drop.detail})
    else:
      kept.append(row)
  return {"tasks": kept, "proposed": len(drafts), "examined": examined, "drops": drops}


# ---------------------------------------------------------------------- domains

async def _domain(gen: Generator, idea: dict, settings: SynthSettings, out: Path) -> dict:
  """Runs one domain's stages in order; returns {stage: stage record} up to a drop."""
  work, name = out / "work" / idea["name"], idea["name"]
  records: dict[str, dict] = {}
  parts: dict[str, Any] = {}
  proposals = math.ceil(settings.tasks_per_domain * settings.oversample)

  async def make(stage: str, spend: Spend) -> Any:
    if stage == "schema":
      return _checked_schema(await gen.schema(idea, spend), idea)
    if stage == "database":
      return _checked_database(await gen.database(idea, parts["schema"], spend), parts["schema"])
    if stage == "tools":
      return _checked_tools(await gen.tools(idea, parts["schema"], spend), parts["schema"])
    if stage == "policy":
      return _checked_policy(await gen.policy(idea, parts["schema"], parts["tools"], spend))
    drafts = await gen.tasks(idea, parts["schema"], parts["database"], parts["tools"],
                             parts["policy"], proposals, spend)
    result = await _checked_tasks(drafts, parts, name, settings.tasks_per_domain)
    if not result["tasks"]:
      raise SynthDrop("no_task_kept", f"none of {len(drafts)} task drafts passed verification")
    return result

  for stage in STAGES:
    records[stage] = await _stage(work / f"{stage}.json", lambda spend, s=stage: make(s, spend))
    if "drop" in records[stage]:
      return records
    parts[stage] = records[stage]["result"]
  _write_domain(out / "domains" / name, parts, settings)
  return records


def _write_domain(folder: Path, parts: dict, settings: SynthSettings) -> None:
  """The domain folder, with a seeded train/test split of the kept tasks."""
  if all((folder / f).is_file() for f in DOMAIN_FILES):
    return
  tasks = parts["tasks"]["tasks"]
  ids = [t["id"] for t in tasks]
  random.Random(f"{settings.seed}/{folder.name}/split").shuffle(ids)
  n_test = round(len(ids) * settings.test_fraction)
  for fname, obj in (("schema.json", parts["schema"]), ("tools.json", parts["tools"]),
                     ("db.json", parts["database"]), ("tasks.json", tasks),
                     ("split_tasks.json", {"train": sorted(ids[n_test:]),
                                           "test": sorted(ids[:n_test])})):
    _write_json(folder / fname, obj)
  (folder / "policy.md").write_text(parts["policy"])


# ----------------------------------------------------------------------- report

def _report(ideas_record: dict, by_domain: dict[str, dict]) -> dict:
  drops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  drops["domains"].update(ideas_record["result"]["dropped"])
  spend = Spend(**ideas_record["spend"])
  per_domain, proposed, examined = {}, 0, 0
  for name, records in by_domain.items():
    for stage, record in records.items():
      spend.add(Spend(**record["spend"]))
      if "drop" in record:
        drops[stage][record["drop"]["reason"]] += 1
    tasks = (records.get("tasks") or {}).get("result")
    if tasks is None:
      continue
    proposed += tasks["proposed"]
    examined += tasks["examined"]
    for drop in tasks["drops"]:
      drops["task_verification"][drop["reason"]] += 1
    per_domain[name] = {"tables": len(records["schema"]["result"]["tables"]),
                        "rows": sum(len(r) for r in records["database"]["result"].values()),
                        "tools": len(records["tools"]["result"]),
                        "tasks": len(tasks["tasks"])}
  return {"domains": {"proposed": len(by_domain), "kept": len(per_domain)},
          "tasks": {"proposed": proposed, "examined": examined,
                    "kept": sum(d["tasks"] for d in per_domain.values())},
          "drops": {stage: dict(sorted(c.items())) for stage, c in drops.items() if c},
          "llm": dataclasses.asdict(spend), "per_domain": per_domain}


async def synthesize(gen: Generator, settings: SynthSettings, out: Path | str) -> dict:
  """Runs (or resumes) the whole pipeline into `out`; returns and writes the report."""
  out = Path(out)
  ideas_record = await _stage(out / "work" / "domains.json",
                              lambda spend: _ideas(gen, settings.num_domains, spend))
  if "drop" in ideas_record:
    raise SynthDrop(ideas_record["drop"]["reason"], ideas_record["drop"]["detail"])
  sem = asyncio.Semaphore(settings.concurrency)

  async def guarded(idea):
    async with sem:
      return idea["name"], await _domain(gen, idea, settings, out)

  by_domain = dict(await asyncio.gather(*(guarded(i) for i in ideas_record["result"]["ideas"])))
  report = _report(ideas_record, by_domain)
  _write_json(out / "report.json", report)
  return report


async def _ideas(gen: Generator, n: int, spend: Spend) -> dict:
  """Up to `n` domain ideas with unique snake_case names; the others counted by reason."""
  ideas, dropped = [], collections.Counter()
  for idea in await gen.domain_ideas(n, spend):
    name = idea.get("name") if isinstance(idea, dict) else None
    if not isinstance(name, str) or not NAME_RE.match(name):
      dropped["invalid_name"] += 1
    elif name in {i["name"] for i in ideas}:
      dropped["duplicate"] += 1
    else:
      ideas.append(idea)
  if not ideas:
    raise SynthDrop("no_domain", "the generator proposed no usable domain name")
  return {"ideas": ideas[:n], "dropped": dict(dropped)}
