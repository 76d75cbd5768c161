"""Rule graders: normalised exact match, numeric (GSM8K) match, multiple-choice letter match."""

import pytest

from orchestra.envs.qa import CHOICE, EXACT, NUMERIC
from orchestra.envs.qa_graders import (choice_letter, choice_match, exact_match,
                                    extract_final_answer, grade, normalise, numeric_match,
                                    parse_number)


@pytest.mark.parametrize("text, expected", [
    ("Let me think. The result is \\boxed{\\text{Jane Ballou}}.", "\\text{Jane Ballou}"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("Reasoning...\nFinal answer: **Paris**.\nThanks", "Paris"),
    ("The answer is 42.", "42"),
    ("<think>answer: 3</think>Answer: 4", "4"),
    ("just words", "just words"),
    ("", ""),
    (None, ""),
])
def test_extract_final_answer(text, expected):
  assert extract_final_answer(text) == expected


def test_normalise():
  assert normalise("  The  Eiffel-Tower!! ") == "eiffel tower"
  assert normalise("\\text{Jane} \\textbf{Ballou}") == "jane ballou"
  assert normalise("Ｐａｒｉｓ") == "paris"                      # NFKC full-width letters
  assert parse_number("$1,234.50") == 1234.5 and parse_number("40%") == 40.0
  assert parse_number("twelve") is None and parse_number("1,23") is None


@pytest.mark.parametrize("prediction, gold, aliases, correct", [
    ("Final answer: the Eiffel Tower", "Eiffel Tower", (), True),
    ("Answer: jane ballou", "Jane Ballou", (), True),
    ("Answer: Jane Smith", "Jane Ballou", (), False),
    ("Answer: thirty-seventh", "37th", ("thirty-seventh",), True),
    ("Answer: 506,000", "506000", (), True),                 # numbers compared as numbers
    ("Answer: 506001", "506000", (), False),
    ("Answer: 0.5", "1/2", (), False),                        # no fraction arithmetic
    ("", "Paris", (), False),
    (None, "Paris", (), False),
])
def test_exact_match(prediction, gold, aliases, correct):
  result = exact_match(prediction, gold, aliases)
  assert result.correct is correct and result.method == EXACT


@pytest.mark.parametrize("prediction, gold, correct, extracted", [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", True, "18"),
    ("So the profit is $70,000.", "70000", True, "70000"),
    ("The answer is 18.0", "18", True, "18"),
    ("It dropped by -5 degrees", "-5", True, "-5"),
    ("First 18, but then 3 * 6 = 19", "18", False, "19"),     # the last number counts
    ("I do not know", "18", False, None),
])
def test_numeric_match(prediction, gold, correct, extracted):
  result = numeric_match(prediction, gold)
  assert (result.correct, result.extracted, result.method) == (correct, extracted, NUMERIC)


@pytest.mark.parametrize("prediction, letter", [
    ("B", "B"), ("(c)", "C"), ("**D.**", "D"), ("B. Aspiration pneumonia", "B"),
    ("Reasoning...\nAnswer: E", "E"), ("The answer is (A).", "A"), ("\\boxed{C}", "C"),
    ("The correct option is B because", "B"),
    ("the option is a guess", None),              # lower-case prose is no commitment
    ("I think it is Argon", None), ("", None),
])
def test_choice_letter(prediction, letter):
  assert choice_letter(prediction) == letter


def test_choice_match_and_dispatch():
  assert choice_match("Answer: b", "B").correct
  assert not choice_match("Answer: C", "B").correct
  assert grade(CHOICE, "Answer: B", "B").method == CHOICE
  assert grade(NUMERIC, "#### 7", "7").correct
  assert grade(EXACT, "Answer: Trundle", "trundle").correct
  with pytest.raises(ValueError, match="unknown grading method"):
    grade("fuzzy", "a", "a")
