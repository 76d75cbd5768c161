"""Rule-based graders: normalised exact match, numeric match, multiple-choice letter match.

All are pure functions of strings and never raise on model output. A prediction is
first reduced to its final answer (`extract_final_answer`): the last `\\boxed{...}`,
else the text after the last "final answer:" / "answer:" marker, else the whole text.

    normalise(s)  = casefold(NFKC(s)), `\\text{..}` and `\\boxed{..}` unwrapped, punctuation
                    -> spaces, articles (a, an, the) dropped, whitespace collapsed
    exact_match   : normalise(pred) == normalise(gold) for gold or any alias, or both parse as
                    numbers with |p - g| <= 1e-6 * max(1, |g|)
    numeric_match : the last number in pred (commas, $ and % ignored) == the gold number, same
                    tolerance (GSM8K's rule: the final number counts)
    choice_match  : the letter the prediction commits to ("B", "(B)", "B.", "Answer: B",
                    "the answer is **B**") == gold letter, case-insensitive
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import unicodedata
from collections.abc import Sequence

from orchestra.envs.qa import CHOICE, EXACT, NUMERIC

REL_TOL = 1e-6
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}‘’“”–—…]")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_MARKER = re.compile(r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*", re.IGNORECASE)
_ANSWER_IS = re.compile(r"(?:final\s+answer|answer)\s+is\s+", re.IGNORECASE)
_LETTER_PATTERNS = [
    re.compile(r"^\W*([A-Za-z])\W*$"),                                  # "B", "(B)", "**B.**"
    re.compile(r"^\(?([A-Za-z])[\).:]\s"),                               # "B) text", "B. text"
    # "answer is B", "option (C)": the letter must be a capital here, so that prose such as
    # "the option is a guess" does not commit to A.
    re.compile(r"(?i:answer|option|choice)\s*(?i:is)?\s*[:：]?\s*\**\(?([A-Z])\)?\**(?:\W|$)"),
]


@dataclasses.dataclass(frozen=True)
class Grade:
  correct: bool
  method: str                       # EXACT | NUMERIC | CHOICE
  extracted: str | None             # what was compared (None: nothing to compare)


def _unwrap_braced(text: str, command: str) -> list[str]:
  """Contents of every `\\command{...}` in `text`, braces balanced."""
  out, start = [], 0
  token = "\\" + command + "{"
  while (i := text.find(token, start)) >= 0:
    depth, j = 1, i + len(token)
    while j < len(text) and depth:
      depth += {"{": 1, "}": -1}.get(text[j], 0)
      j += 1
    if depth:
      break
    out.append(text[i + len(token):j - 1])
    start = j
  return out


def extract_final_answer(text: str | None) -> str:
  """The answer a free-form response commits to: last \\boxed{}, else after the last marker."""
  if not text:
    return ""
  text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()
  boxed = _unwrap_braced(text, "boxed")
  if boxed:
    return boxed[-1].strip()
  markers = list(_MARKER.finditer(text)) or list(_ANSWER_IS.finditer(text))
  if markers:
    tail = text[markers[-1].end():].strip()
    first = tail.splitlines()[0].strip() if tail else ""
    while first != (first := first.strip("*_ `").rstrip(".")):   # "**Paris**." -> "Paris"
      pass
    return first
  return text.strip()


def normalise(text: str) -> str:
  """Lower-cased, unwrapped, punctuation and articles removed, whitespace collapsed."""
  text = unicodedata.normalize("NFKC", text)
  for command in ("text", "textbf", "mathrm", "boxed"):
    for inner in _unwrap_braced(text, command):
      text = text.replace(f"\\{command}{{{inner}}}", inner)
  text = text.casefold().replace("$", " ")
  text = _PUNCT.sub(" ", text)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def parse_number(text: str) -> float | None:
  """`text` as one number ("1,234.5", "$18", "40%", "-3") or None."""
  cleaned = text.strip().replace("$", "").rstrip("%").rstrip(".").strip()
  if not _NUMBER.fullmatch(cleaned):
    return None
  try:
    return float(cleaned.replace(",", ""))
  except ValueError:
    return None


def last_number(text: str) -> float | None:
  """The last number written in `text` (commas as thousands separators), or None."""
  matches = _NUMBER.findall(text or "")
  if not matches:
    return None
  try:
    return float(matches[-1].replace(",", ""))
  except ValueError:
    return None


def numbers_equal(a: float, b: float, rel_tol: float = REL_TOL) -> bool:
  """|a - b| <= rel_tol * max(1, |b|)."""
  return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel_tol * max(1.0, abs(b))


def exact_match(prediction: str | None, gold: str, aliases: Sequence[str] = ()) -> Grade:
  """Normalised exact match against `gold` or any alias (numbers compared as numbers)."""
  extracted = extract_final_answer(prediction)
  if not extracted:
    return Grade(False, EXACT, None)
  pred_norm, pred_num = normalise(extracted), parse_number(extracted)
  for target in (gold, *aliases):
    if pred_norm and pred_norm == normalise(target):
      return Grade(True, EXACT, extracted)
    gold_num = parse_number(target)
    if pred_num is not None and gold_num is not None and numbers_equal(pred_num, gold_num):
      return Grade(True, EXACT, extracted)
  return Grade(False, EXACT, extracted)


def numeric_match(prediction: str | None, gold: str) -> Grade:
  """The last number of the prediction's final answer equals the gold number."""
  extracted = extract_final_answer(prediction)
  value = last_number(extracted)
  gold_value = parse_number(gold)
  if value is None or gold_value is None:
    return Grade(False, NUMERIC, None if value is None else f"{value:g}")
  return Grade(numbers_equal(value, gold_value), NUMERIC, f"{value:g}")


def choice_letter(prediction: str | None) -> str | None:
  """The option letter a response commits to, upper-cased, or None if it names none."""
  text = extract_final_answer(prediction)
  if not text:
    return None
  for pattern in _LETTER_PATTERNS:
    m = pattern.search(text)
    if m:
      return m.group(1).upper()
  return None


def choice_match(prediction: str | None, gold: str) -> Grade:
  """The prediction's option letter equals the gold letter."""
  letter = choice_letter(prediction)
  return Grade(letter is not None and letter == gold.strip().upper(), CHOICE, letter)


def grade(method: str, prediction: str | None, gold: str, aliases: Sequence[str] = ()) -> Grade:
  """Grades `prediction` with `method` (EXACT, NUMERIC or CHOICE)."""
  if method == NUMERIC:
    return numeric_match(prediction, gold)
  if method == CHOICE:
    return choice_match(prediction, gold)
  if method == EXACT:
    return exact_match(prediction, gold, aliases)
  raise ValueError(f"unknown grading method {method!r}; expected {EXACT}, {NUMERIC} or {CHOICE}")
