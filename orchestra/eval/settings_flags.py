"""Settings defined once: dataclass fields carry their help, absl flags are generated from them.

  @dataclasses.dataclass(frozen=True)
  class JudgeSpec:
    model: str | None = setting(None, "LLM judge model name")
    price_in_per_1m: float = setting(0.0, "judge USD per 1M prompt tokens", flag="price_in")

  define_flags(JudgeSpec, prefix="judge_")          # --judge_model, --judge_price_in
  spec = from_flags(JudgeSpec, FLAGS, prefix="judge_")

A field made with `setting` becomes the flag `prefix + (flag or field name)`, typed by its
annotation (str, int, float, bool, list[str], each optionally `| None`) or an enum when
`choices` is given; fields made otherwise are not flags.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from absl import flags

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool, list: flags.DEFINE_list}


def setting(default: Any, help: str, *, flag: str | None = None,  # noqa: A002 - absl's name
            choices: Sequence[str] | None = None) -> Any:
  """A dataclass field that is also a command-line flag (named `flag`, default: the field's)."""
  return dataclasses.field(default=default,
                           metadata={"help": help, "flag": flag, "choices": choices})


def flag_fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
  """flag name -> field, for the fields of dataclass `cls` made with `setting`."""
  return {prefix + (f.metadata["flag"] or f.name): f for f in dataclasses.fields(cls)
          if "help" in f.metadata}


def _flag_type(annotation: Any) -> type:
  """str for `str | None`, list for `list[str]`, ...: the type the flag parses to."""
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    annotation = args[0]
  return typing.get_origin(annotation) or annotation


def define_flags(cls: type, prefix: str = "", flag_values: flags.FlagValues = flags.FLAGS
                 ) -> None:
  """Defines one absl flag per `setting` field of `cls` in `flag_values`."""
  hints = typing.get_type_hints(cls)
  for name, field in flag_fields(cls, prefix).items():
    help_text, choices = field.metadata["help"], field.metadata["choices"]
    if choices is not None:
      flags.DEFINE_enum(name, field.default, list(choices), help_text, flag_values=flag_values)
    else:
      _DEFINE[_flag_type(hints[field.name])](name, field.default, help_text,
                                             flag_values=flag_values)


def from_flags(cls: type, flag_values: flags.FlagValues, prefix: str = "", **overrides: Any):
  """An instance of `cls` with each `setting` field read from its flag (a flag that is not
  defined leaves the field's default), then `overrides`."""
  values = {field.name: getattr(flag_values, name)
            for name, field in flag_fields(cls, prefix).items() if name in flag_values}
  return cls(**{**values, **overrides})
