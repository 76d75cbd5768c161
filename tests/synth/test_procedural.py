"""The offline synthesis pipeline: same seed same bytes, every kept task verified, every domain
loadable, resumable stage by stage, and verification dropping each kind of broken task."""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from orchestra.envs.domains import Task, load_domain
from orchestra.envs.domains.declarative import declarative_domain
from orchestra.synth.drafts import task_from_draft
from orchestra.synth.pipeline import SynthSettings, synthesize
from orchestra.synth.procedural import ProceduralGenerator, make_tasks
from orchestra.synth.run import SynthConfigError, settings_from_config
from orchestra.synth.verify import Deduplicator, verify_task

ROOT = Path(__file__).resolve().parents[2]
SMALL = SynthSettings(seed=3, num_domains=3, tasks_per_domain=12, concurrency=2)


def run(out, settings=SMALL, gen=None):
  return asyncio.run(synthesize(gen or ProceduralGenerator(settings.seed), settings, out))


def files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
  run(tmp_path / "a")
  run(tmp_path / "b")
  run(tmp_path / "c", SynthSettings(seed=4, num_domains=3, tasks_per_domain=12))
  assert files(tmp_path / "a") == files(tmp_path / "b")
  a, c = files(tmp_path / "a" / "domains"), files(tmp_path / "c" / "domains")
  assert a != c


def test_every_domain_loads_and_every_kept_task_passes_verification(tmp_path):
  report = run(tmp_path)
  assert report["domains"] == {"proposed": 3, "kept": 3}
  assert report["tasks"]["kept"] == 36 and report["llm"]["cost_usd"] == 0
  names = sorted(p.name for p in (tmp_path / "domains").iterdir())
  assert len(set(names)) == 3
  for name in names:
    domain = load_domain(name, str(tmp_path))
    assert len(domain.tasks) == 12
    assert sorted(domain.splits["train"] + domain.splits["test"]) == sorted(
        t.id for t in domain.tasks)
    assert len(domain.splits["test"]) == round(12 * SMALL.test_fraction)
    for schema in domain.tool_schemas():
      assert schema["type"] == "function" and schema["function"]["description"]
      jsonschema.Draft202012Validator.check_schema(schema["function"]["parameters"])
    kinds = {t.description["kind"] for t in domain.tasks}
    assert kinds == {"read", "write"}
    dedupe = Deduplicator()
    for task in domain.tasks:
      assert asyncio.run(verify_task(domain, task)) is None, task.id
      assert dedupe.check(task) is None, task.id


class CountingGenerator(ProceduralGenerator):
  calls: list = []

  def __getattribute__(self, name):
    attr = super().__getattribute__(name)
    if name in ("schema", "database", "tools", "policy", "tasks", "domain_ideas"):
      CountingGenerator.calls.append(name)
    return attr


def test_a_rerun_resumes_from_the_stage_files(tmp_path):
  first = run(tmp_path)
  before = files(tmp_path)
  name = sorted(first["per_domain"])[0]
  (tmp_path / "work" / name / "tools.json").unlink()       # killed after the database stage
  for f in ("policy.json", "tasks.json"):
    (tmp_path / "work" / name / f).unlink()
  for f in (tmp_path / "domains" / name).iterdir():
    f.unlink()
  CountingGenerator.calls.clear()
  second = run(tmp_path, gen=CountingGenerator(SMALL.seed))
  assert sorted(CountingGenerator.calls) == ["policy", "tasks", "tools"]
  assert second == first and files(tmp_path) == before


@pytest.fixture(scope="module")
def parts():
  """One procedural domain's parts, and a task draft factory over them."""
  gen = ProceduralGenerator(0)

  async def make():
    idea = (await gen.domain_ideas(1, None))[0]
    schema = await gen.schema(idea, None)
    db = await gen.database(idea, schema, None)
    tools = await gen.tools(idea, schema, None)
    return idea, schema, db, tools
  return asyncio.run(make())


def verdict(parts, draft, dedupe=None):
  idea, schema, db, tools = parts
  task = Task.model_validate(task_from_draft(idea["name"], "x", draft))
  domain = declarative_domain(schema, tools, db, "policy", [task], {})
  drop = asyncio.run(verify_task(domain, task)) or (dedupe or Deduplicator()).check(task)
  return drop and drop.reason


def test_verification_drops_each_broken_task_with_its_reason(parts):
  idea, schema, db, tools = parts
  drafts = make_tasks(0, idea, schema, db, tools, 40)
  write = next(d for d in drafts if d["kind"] == "write")
  read = next(d for d in drafts if d["kind"] == "read")
  assert verdict(parts, write) is None and verdict(parts, read) is None
  assert verdict(parts, {**write, "kind": "read"}) == "read_changes_db"
  reads_only = {**write, "actions": write["actions"][:1], "communicate_info": []}
  assert verdict(parts, reads_only) == "write_changes_nothing"
  failing = {**write, "actions": write["actions"][:-1] + [
      {"name": write["actions"][-1]["name"], "arguments": {"bogus": 1}}]}
  assert verdict(parts, failing) == "gold_action_failed"
  assert verdict(parts, {**write, "actions": [{"name": "teleport", "arguments": {}}]}) == (
      "unknown_tool")
  assert verdict(parts, {**read, "communicate_info": []}) == "do_nothing_passes"
  dedupe = Deduplicator()
  assert verdict(parts, write, dedupe) is None
  assert verdict(parts, {**write, "persona": "Someone else."}, dedupe) == "duplicate"


def load_synth_config(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_configs_refuse_fields_no_code_reads():
  config = load_synth_config("synth_offline")
  assert settings_from_config(config).num_domains == 8
  config.temperature = 0.5
  with pytest.raises(SynthConfigError, match=r"\['config.temperature'\] are not read"):
    settings_from_config(config)
  config = load_synth_config("synth_offline")
  config.oversample = 0.5
  with pytest.raises(SynthConfigError, match="oversample=0.5 must be >= 1"):
    settings_from_config(config)
  config = load_synth_config("synth_llm")
  config.generator = "procedural"
  with pytest.raises(SynthConfigError, match=r"\['config.llm'\] are not read by the procedural"):
    settings_from_config(config)


def launch(script, *args):
  return subprocess.run([sys.executable, str(ROOT / "launch" / script), *args],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_the_launcher_writes_domains_that_tau2_eval_replays(tmp_path):
  out = launch("synthesize.py", f"--config={ROOT / 'configs' / 'synth_offline.py'}",
               f"--out={tmp_path}", "--config.num_domains=2", "--config.tasks_per_domain=5")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "domains kept 2/2, tasks kept 10" in out.stdout
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["tasks"]["kept"] == 10 and len(report["per_domain"]) == 2
  name = sorted(report["per_domain"])[0]
  out = launch("eval.py", "--benchmark=tau2", f"--domain={name}", f"--data={tmp_path}",
               "--replay_gold", f"--out={tmp_path / 'gold.jsonl'}")
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"replayed 5 {name} tasks (0 gold actions raised)" in out.stdout
