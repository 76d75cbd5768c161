"""Question-answering benchmarks read from local files: HLE, FRAMES, GSM8K and generic JSONL.

Every loader reads a JSON array (`[{...}, {...}]`) or JSON Lines (one object per
line); the format is detected from the first non-blank character (`[` = array).
Every row is validated, and the first bad one stops loading with a `QADataError`
naming the file and the 1-based line where that row starts:

    frames.json, line 4812: row 201: field 'Answer' must be a string, got list

Row formats (field names as the public releases spell them):

  hle     id, question | Question, answer, answer_type (exactMatch | multipleChoice),
          category, optional raw_subject, rationale, image. A row with a non-empty
          `image` is skipped under `text_only=True` (the default) and counted in
          `QASet.skipped["image"]`.
  frames  Prompt | Question, Answer (a string), optional `answer` (a list of accepted
          answers, or a string; without `Answer` its first entry is the answer),
          reasoning_types ("Numerical reasoning | Tabular reasoning"; each type becomes a
          category), wiki_links (a list, or a string holding one) and/or
          wikipedia_link_1..N (and wikipedia_link_11+), optional id.
  gsm8k   question, answer: a worked solution ending in `#### <final number>`.
  jsonl   question, answer (a string or a number), optional id, category.

Ids must be unique within a file (results are resumed by id); a row without one
gets its 0-based row index.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

BENCHMARKS = ("hle", "frames", "gsm8k", "jsonl")
# How an item's prediction is graded by rules (orchestra.envs.qa_graders).
EXACT, NUMERIC, CHOICE = "exact_match", "numeric", "multiple_choice"
HLE_ANSWER_TYPES = {"exactMatch": EXACT, "multipleChoice": CHOICE}
_URL = re.compile(r"https?://\S+")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


class QADataError(ValueError):
  """A benchmark file that cannot be read; the message names the file, line and fix."""


@dataclasses.dataclass(frozen=True)
class QAItem:
  """One benchmark question with its reference answer."""
  id: str
  question: str
  answer: str                               # the reference answer (GSM8K: the final number)
  grader: str                               # EXACT | NUMERIC | CHOICE
  categories: tuple[str, ...]               # one or more labels for per-category reports
  aliases: tuple[str, ...] = ()             # other accepted answers (FRAMES' `answer` list)
  line: int = 0                             # 1-based line where the row starts in its file
  meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass
class QASet:
  """What a loader returns: the items kept and the rows skipped, by reason."""
  benchmark: str
  path: str
  items: list[QAItem]
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def n_skipped(self) -> int:
    return sum(self.skipped.values())

  def by_category(self) -> dict[str, int]:
    return by_category(self.items)


def by_category(items: list[QAItem]) -> dict[str, int]:
  """Items per category label, largest first (a multi-label item counts under each label)."""
  counts = collections.Counter(c for item in items for c in item.categories)
  return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ----------------------------------------------------------------------------- reading rows


def read_rows(path: str) -> Iterator[tuple[int, int, Any]]:
  """Yields (row index, 1-based line, decoded value) for each row of a JSON array or JSONL file."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise QADataError(f"{path}: no such file; pass an existing benchmark file to --data") from None
  except UnicodeDecodeError as e:
    raise QADataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  except OSError as e:
    raise QADataError(f"{path}: cannot read ({e.strerror})") from None
  text = text.removeprefix("\ufeff")
  stripped = text.lstrip()
  if not stripped:
    raise QADataError(f"{path}: file is empty")
  rows = _array_rows(path, text) if stripped[0] == "[" else _jsonl_rows(path, text)
  yield from rows


def _jsonl_rows(path: str, text: str) -> Iterator[tuple[int, int, Any]]:
  index = 0
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise QADataError(f"{path}, line {lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                        "JSON Lines files need one complete JSON object per line") from None
    yield index, lineno, value
    index += 1


def _array_rows(path: str, text: str) -> Iterator[tuple[int, int, Any]]:
  """Decodes a top-level JSON array element by element, keeping each element's line."""
  decoder = json.JSONDecoder()
  pos = text.index("[") + 1
  line = text.count("\n", 0, pos) + 1
  index = 0

  def skip_ws(p):
    nonlocal line
    q = p
    while q < len(text) and text[q] in " \t\r\n":
      q += 1
    line += text.count("\n", p, q)
    return q

  def fail(p, what):
    raise QADataError(f"{path}, line {text.count(chr(10), 0, p) + 1}: invalid JSON array "
                      f"({what})")

  pos = skip_ws(pos)
  if pos < len(text) and text[pos] == "]":
    return
  while True:
    try:
      value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise QADataError(f"{path}, line {e.lineno}: invalid JSON ({e.msg} at column "
                        f"{e.colno})") from None
    yield index, line, value
    index += 1
    line += text.count("\n", pos, end)
    pos = skip_ws(end)
    if pos >= len(text):
      fail(pos, "missing closing ']'")
    if text[pos] == "]":
      rest = text[pos + 1:]
      if rest.strip():
        fail(pos + 1 + len(rest) - len(rest.lstrip()), "unexpected text after the closing ']'")
      return
    if text[pos] != ",":
      fail(pos, f"expected ',' or ']' between rows, got {text[pos]!r}")
    pos = skip_ws(pos + 1)


# ----------------------------------------------------------------------------- field checks


class _Row:
  """One decoded row and where it came from; its checks raise QADataError naming the line."""

  def __init__(self, path: str, index: int, line: int, value: Any):
    self.where = f"{path}, line {line}: row {index}"
    self.index, self.line = index, line
    if not isinstance(value, dict):
      self.fail(f"expected a JSON object, got a JSON {_json_type(value)}")
    self.data = value

  def fail(self, message: str):
    raise QADataError(f"{self.where}: {message}")

  def string(self, *names: str, required: bool = True, allow_number: bool = False) -> str | None:
    """The first present field of `names` as a non-empty string (numbers converted if allowed)."""
    name = next((n for n in names if self.data.get(n) is not None), None)
    if name is None:
      if required:
        self.fail(f"missing field {' or '.join(repr(n) for n in names)}")
      return None
    value = self.data[name]
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
      value = str(value)
    if not isinstance(value, str):
      kinds = "a string or a number" if allow_number else "a string"
      self.fail(f"field {name!r} must be {kinds}, got {_json_type(value)}")
    if required and not value.strip():
      self.fail(f"field {name!r} is empty")
    return value

  def optional_string(self, name: str) -> str | None:
    value = self.data.get(name)
    if value is not None and not isinstance(value, str):
      self.fail(f"field {name!r} must be a string, got {_json_type(value)}")
    return value

  def item_id(self) -> str:
    if self.data.get("id") is None:
      return str(self.index)
    value = self.data["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
      self.fail(f"field 'id' must be a string or an integer, got {_json_type(value)}")
    if isinstance(value, str) and not value.strip():
      self.fail("field 'id' is empty")
    return str(value)


def _json_type(value: Any) -> str:
  return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
          int: "number", float: "number"}.get(type(value), type(value).__name__)


def _labels(text: str) -> tuple[str, ...]:
  """`"A | B"` -> ("A", "B"), blanks dropped."""
  return tuple(dict.fromkeys(p.strip() for p in text.split("|") if p.strip()))


# ----------------------------------------------------------------------------- loaders


def _hle_item(row: _Row, text_only: bool) -> QAItem | str:
  """An HLE item, or the reason ("image") the row is skipped."""
  if row.data.get("id") is None:
    row.fail("missing field 'id'")
  item_id = row.item_id()
  question = row.string("question", "Question")
  answer = row.string("answer", allow_number=True)
  answer_type = row.string("answer_type")
  if answer_type not in HLE_ANSWER_TYPES:
    row.fail(f"field 'answer_type' must be one of {sorted(HLE_ANSWER_TYPES)}, got {answer_type!r}")
  category = row.string("category")
  raw_subject, rationale = row.optional_string("raw_subject"), row.optional_string("rationale")
  image = row.optional_string("image")
  if image and text_only:
    return "image"
  if answer_type == "multipleChoice" and not re.fullmatch(r"\s*[A-Za-z]\s*", answer):
    row.fail(f"multipleChoice answer must be one letter, got {answer!r}")
  meta = {k: v for k, v in (("raw_subject", raw_subject), ("rationale", rationale),
                            ("image", image)) if v}
  return QAItem(id=item_id, question=question, answer=answer.strip(),
                grader=HLE_ANSWER_TYPES[answer_type], categories=(category.strip(),),
                line=row.line, meta={"answer_type": answer_type, **meta})


def _link_number(field: str) -> tuple[int, str]:
  """`wikipedia_link_10` -> (10, ...), `wikipedia_link_11+` -> (11, ...): numeric field order."""
  digits = re.match(r"\d+", field.removeprefix("wikipedia_link_"))
  return (int(digits.group()) if digits else 10**6, field)


def _urls(text: str) -> list[str]:
  """URLs in `text` separated by whitespace (Wikipedia titles may hold `'` and `,`), else the text.

  Separators a list may add (`,` `;` and brackets/quotes around a URL) are trimmed from each end.
  """
  found = [u.strip("'\"[]()<>").rstrip(",;") for u in _URL.findall(text)]
  found = [u for u in found if u]
  return found or ([text.strip()] if text.strip() else [])


def _frames_links(row: _Row) -> list[str]:
  """Wikipedia URLs from `wiki_links` (list or stringified list) and `wikipedia_link_*`."""
  link_fields = sorted((k for k in row.data if k.startswith("wikipedia_link_")),
                       key=_link_number)
  if "wiki_links" not in row.data and not link_fields:
    row.fail("missing field 'wiki_links' or 'wikipedia_link_1'..; FRAMES rows list their "
             "Wikipedia articles")
  links: list[str] = []
  raw = row.data.get("wiki_links")
  if isinstance(raw, str) and raw.strip():
    try:
      parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      parsed = _urls(raw)
    raw = parsed if isinstance(parsed, list) else [parsed]
  if isinstance(raw, list):
    for link in raw:
      if not isinstance(link, str):
        row.fail(f"field 'wiki_links' must list strings, got {_json_type(link)}")
      links.append(link)
  elif raw not in (None, ""):
    row.fail(f"field 'wiki_links' must be a list or a string, got {_json_type(raw)}")
  for name in link_fields:
    value = row.data[name]
    if value is None or value == "":
      continue
    if not isinstance(value, str):
      row.fail(f"field {name!r} must be a string, got {_json_type(value)}")
    links.extend(_urls(value))
  return list(dict.fromkeys(link.strip() for link in links if link.strip()))


def _frames_item(row: _Row) -> QAItem:
  question = row.string("Prompt", "Question")
  aliases = row.data.get("answer")
  if isinstance(aliases, (str, int, float)) and not isinstance(aliases, bool):
    aliases = [str(aliases)]
  if aliases is not None and (not isinstance(aliases, list)
                              or not all(isinstance(a, str) for a in aliases)):
    row.fail(f"field 'answer' must be a list of strings or a string, got {_json_type(aliases)}")
  if row.data.get("Answer") is None and aliases and any(a.strip() for a in aliases):
    answer = next(a for a in aliases if a.strip())           # a file with only `answer`
  else:
    answer = row.string("Answer", allow_number=True)
  reasoning = row.string("reasoning_types")
  links = _frames_links(row)
  extra = tuple(a.strip() for a in aliases or () if a.strip() and a.strip() != answer.strip())
  return QAItem(id=row.item_id(), question=question, answer=answer.strip(), grader=EXACT,
                categories=_labels(reasoning) or ("uncategorized",), aliases=extra,
                line=row.line, meta={"reasoning_types": reasoning, "wiki_links": links})


def gsm8k_final_answer(solution: str) -> str | None:
  """The number after the last `####` of a GSM8K solution, `,` and `$` removed; None if absent."""
  if "####" not in solution:
    return None
  number = solution.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
  return number if _NUMBER.match(number) else None


def _gsm8k_item(row: _Row) -> QAItem:
  question = row.string("question")
  solution = row.string("answer")
  final = gsm8k_final_answer(solution)
  if final is None:
    tail = solution.strip().splitlines()[-1][:60] if solution.strip() else ""
    row.fail(f"field 'answer' must end with '#### <number>' (GSM8K's final answer), "
             f"last line is {tail!r}")
  return QAItem(id=row.item_id(), question=question, answer=final, grader=NUMERIC,
                categories=("gsm8k",), line=row.line,
                meta={"solution": solution.rsplit("####", 1)[0].strip()})


def _generic_item(row: _Row) -> QAItem:
  question = row.string("question")
  answer = row.string("answer", allow_number=True)
  category = row.string("category", required=False)
  if category is not None and not category.strip():
    row.fail("field 'category' is empty")
  return QAItem(id=row.item_id(), question=question, answer=answer.strip(), grader=EXACT,
                categories=(category.strip() if category else "uncategorized",), line=row.line)


def _load(benchmark: str, path: str, make: Callable[[_Row], QAItem | str]) -> QASet:
  items, skipped, first_line = [], collections.Counter(), {}
  for index, line, value in read_rows(path):
    row = _Row(path, index, line, value)
    item = make(row)
    if isinstance(item, str):
      skipped[item] += 1
      continue
    if item.id in first_line:
      row.fail(f"duplicate id {item.id!r} (first at line {first_line[item.id]}); "
               "ids must be unique")
    first_line[item.id] = line
    items.append(item)
  return QASet(benchmark, path, items, dict(skipped))


def load_hle(path: str, text_only: bool = True) -> QASet:
  """HLE rows; with `text_only`, rows with an image are skipped (counted in `skipped`)."""
  return _load("hle", path, lambda row: _hle_item(row, text_only))


def load_frames(path: str) -> QASet:
  """FRAMES rows (google/frames-benchmark columns, or the JSON with `Question`/`answer`)."""
  return _load("frames", path, _frames_item)


def load_gsm8k(path: str) -> QASet:
  """GSM8K rows; each item's answer is the final number after `####`."""
  return _load("gsm8k", path, _gsm8k_item)


def load_jsonl(path: str) -> QASet:
  """Generic rows with question, answer and optional id, category (JSONL or a JSON array)."""
  return _load("jsonl", path, _generic_item)


def load_benchmark(benchmark: str, path: str, *, text_only: bool = True) -> QASet:
  """Dispatches to the loader of `benchmark` (one of BENCHMARKS)."""
  if benchmark == "hle":
    return load_hle(path, text_only=text_only)
  loaders = {"frames": load_frames, "gsm8k": load_gsm8k, "jsonl": load_jsonl}
  if benchmark not in loaders:
    raise QADataError(f"unknown benchmark {benchmark!r}; expected one of {list(BENCHMARKS)}")
  return loaders[benchmark](path)
