"""Flags generated from the settings dataclasses: one flag per field, same default and help,
and a value given on the command line reaches the spec."""

import dataclasses
import typing

import pytest
from absl import flags

from orchestra.eval.qa_settings import JUDGE_PREFIX, JudgeSpec, OrchestratorSpec, RunSettings
from orchestra.eval.settings_flags import define_flags, flag_fields, from_flags, setting
from orchestra.eval.tau2_cli import Tau2Settings

# launch/eval.py's generated flags: (dataclass, prefix)
GENERATED = [(OrchestratorSpec, ""), (RunSettings, ""), (JudgeSpec, JUDGE_PREFIX),
             (Tau2Settings, "")]


@pytest.fixture
def flag_values():
  values = flags.FlagValues()
  for cls, prefix in GENERATED:              # a name generated twice would raise here
    define_flags(cls, prefix, flag_values=values)
  return values


def test_each_setting_field_is_one_flag_with_its_default_and_help(flag_values):
  names = set()
  for cls, prefix in GENERATED:
    for name, field in flag_fields(cls, prefix).items():
      flag = flag_values[name]
      assert flag.default == field.default, name
      assert flag.help.endswith(field.metadata["help"]), name   # an enum's starts <a|b>:
      names.add(name)
  assert names == set(flag_values)
  assert flag_values["orchestrator"].parser.enum_values == ["checkpoint", "chat", "no_tools"]
  assert {"judge_price_in", "judge_cache", "tokenizer", "agent_url"} <= names
  assert "system_prompt" not in names              # a plain field is not a flag


def test_flag_values_reach_the_specs(flag_values):
  flag_values(["eval.py", "--orchestrator=chat", "--base_url=http://h:8000/v1", "--model=m",
               "--price_in=1.25", "--tokenizer=/ckpt", "--max_turns=7", "--judge_model=j",
               "--judge_price_in=2.5", "--judge_cache=/tmp/c", "--task_ids=a,b",
               "--domain=retail"])
  spec = from_flags(OrchestratorSpec, flag_values)
  assert spec == OrchestratorSpec("chat", "http://h:8000/v1", "m", tokenizer_dir="/ckpt",
                                  price_in_per_1m=1.25)
  assert from_flags(RunSettings, flag_values) == RunSettings(max_turns=7)
  judge = from_flags(JudgeSpec, flag_values, JUDGE_PREFIX)
  assert (judge.model, judge.price_in_per_1m, judge.cache_dir) == ("j", 2.5, "/tmp/c")
  tau2 = from_flags(Tau2Settings, flag_values)
  assert (tau2.task_ids, tau2.domain, tau2.num_trials) == (["a", "b"], "retail", 1)


def test_an_undefined_flag_leaves_the_default_and_types_follow_annotations():
  @dataclasses.dataclass(frozen=True)
  class Small:
    count: int = setting(3, "a count")
    rate: float | None = setting(None, "a rate", flag="r")
    names: typing.Optional[list[str]] = setting(None, "names")
    on: bool = setting(False, "a switch")
    plain: str = "kept"

  values = flags.FlagValues()
  define_flags(Small, "x_", flag_values=values)
  values(["prog", "--x_r=0.5", "--x_names=p,q", "--x_on"])
  assert from_flags(Small, values, "x_") == Small(3, 0.5, ["p", "q"], True)
  assert from_flags(Small, flags.FlagValues(), "x_", count=4) == Small(count=4)
