"""QA benchmark loaders: every field variant, bad rows named by file and line, skipped images."""

import json

import pytest

from orchestra.envs.qa import (CHOICE, EXACT, NUMERIC, QADataError, gsm8k_final_answer,
                               load_benchmark, load_frames, load_gsm8k, load_hle, load_jsonl,
                               read_rows)


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return str(path)


def write_array(path, rows):
  path.write_text(json.dumps(rows, indent=4), encoding="utf-8")   # one field per line
  return str(path)


HLE_ROWS = [
    {"id": "6687ffb1091058ff19128813", "question": "Compute the simplicial volume of S_3 x S_2.",
     "answer": "16", "answer_type": "exactMatch", "category": "Math",
     "raw_subject": "Mathematics", "rationale": "24(g-1)(h-1) = 24*2*1 = 48? no: 16.",
     "image": ""},
    {"id": 17, "Question": "Which gas is inert?\n\nAnswer Choices:\nA. O2\nB. Ar\nC. H2",
     "answer": "B", "answer_type": "multipleChoice", "category": "Chemistry"},
    {"id": "img-1", "question": "What does the figure show?", "answer": "a torus",
     "answer_type": "exactMatch", "category": "Math",
     "image": "data:image/png;base64,iVBORw0KGgo="},
    {"id": "n-1", "question": "How many primes are below 10?", "answer": 4,
     "answer_type": "exactMatch", "category": "Math", "rationale": None},
]


def test_hle_fields_text_only_and_image_rows(tmp_path):
  path = write_jsonl(tmp_path / "hle.jsonl", HLE_ROWS)
  qa = load_hle(path)
  assert [i.id for i in qa.items] == ["6687ffb1091058ff19128813", "17", "n-1"]
  first, choice, numeric = qa.items
  assert first.grader == EXACT and first.answer == "16" and first.categories == ("Math",)
  assert first.meta["raw_subject"] == "Mathematics" and "rationale" in first.meta
  assert choice.question.startswith("Which gas") and choice.grader == CHOICE   # `Question`
  assert numeric.answer == "4" and numeric.line == 4                          # numeric answer
  assert qa.skipped == {"image": 1} and qa.n_skipped == 1
  assert qa.by_category() == {"Math": 2, "Chemistry": 1}

  kept = load_hle(path, text_only=False)
  assert len(kept.items) == 4 and kept.n_skipped == 0
  assert kept.items[2].meta["image"].startswith("data:image/png")


def test_hle_json_array_lines_point_at_each_row(tmp_path):
  path = write_array(tmp_path / "hle.json", HLE_ROWS)
  qa = load_benchmark("hle", path)
  text = (tmp_path / "hle.json").read_text().splitlines()
  for item in qa.items:                       # the reported line is the row's opening brace
    assert text[item.line - 1].strip() == "{"
    assert f'"{item.id}"' in text[item.line] or f": {item.id}," in text[item.line]
  assert qa.skipped == {"image": 1}


@pytest.mark.parametrize("row, message", [
    ({"id": "x", "question": "q", "answer": "B", "answer_type": "multiple", "category": "Math"},
     "answer_type"),
    ({"id": "x", "question": "q", "answer": "Argon", "answer_type": "multipleChoice",
      "category": "Chemistry"}, "one letter"),
    ({"question": "q", "answer": "1", "answer_type": "exactMatch", "category": "Math"},
     "missing field 'id'"),
    ({"id": "x", "question": "q", "answer": "1", "answer_type": "exactMatch"},
     "missing field 'category'"),
    ({"id": "x", "question": "", "answer": "1", "answer_type": "exactMatch", "category": "M"},
     "field 'question' is empty"),
])
def test_hle_bad_rows_name_file_and_line(tmp_path, row, message):
  path = write_jsonl(tmp_path / "hle.jsonl", [HLE_ROWS[0], HLE_ROWS[1], row])
  with pytest.raises(QADataError, match=message) as e:
    load_hle(path)
  assert str(e.value).startswith(f"{path}, line 3: row 2:")


FRAMES_ROWS = [
    # google/frames-benchmark columns: Prompt, Answer, wiki_links as a stringified list,
    # wikipedia_link_1..10 and 11+ (a title holding an apostrophe and a comma)
    {"Unnamed: 0": 0, "Prompt": "Who was the mother of the 15th first lady?", "Answer": "Jane",
     "wikipedia_link_1": "https://en.wikipedia.org/wiki/Harriet_Lane",
     "wikipedia_link_2": "https://en.wikipedia.org/wiki/Schindler's_List",
     "wikipedia_link_10": "https://en.wikipedia.org/wiki/Washington,_D.C.",
     "wikipedia_link_11+": "https://en.wikipedia.org/wiki/A https://en.wikipedia.org/wiki/B",
     "wikipedia_link_3": "",
     "reasoning_types": "Numerical reasoning | Tabular reasoning",
     "wiki_links": "['https://en.wikipedia.org/wiki/Harriet_Lane', "
                   "\"https://en.wikipedia.org/wiki/Schindler's_List\"]"},
    # SimpleDeepSearcher's JSON: id, Question, Answer and the same answer as a list
    {"id": "1", "Question": "Where would Bronte tower rank?", "Answer": "37th",
     "answer": ["37th", "thirty-seventh"], "reasoning_types": "Multiple constraints",
     "wiki_links": ["https://en.wikipedia.org/wiki/Jane_Eyre"]},
    # only a list-valued `answer`, numeric reasoning, links only as wikipedia_link_N
    {"id": "2", "Question": "How many years earlier?", "answer": ["87"],
     "reasoning_types": "Numerical reasoning",
     "wikipedia_link_1": "https://en.wikipedia.org/wiki/Punxsutawney_Phil"},
]


def test_frames_field_variants(tmp_path):
  for qa in (load_frames(write_jsonl(tmp_path / "f.jsonl", FRAMES_ROWS)),
             load_frames(write_array(tmp_path / "f.json", FRAMES_ROWS))):
    google, sds, only_list = qa.items
    assert google.id == "0" and google.question.startswith("Who was") and google.answer == "Jane"
    assert google.categories == ("Numerical reasoning", "Tabular reasoning")
    assert google.meta["wiki_links"] == [
        "https://en.wikipedia.org/wiki/Harriet_Lane",
        "https://en.wikipedia.org/wiki/Schindler's_List",
        "https://en.wikipedia.org/wiki/Washington,_D.C.",          # link_10 before link_11+
        "https://en.wikipedia.org/wiki/A", "https://en.wikipedia.org/wiki/B"]
    assert sds.id == "1" and sds.answer == "37th" and sds.aliases == ("thirty-seventh",)
    assert sds.meta["wiki_links"] == ["https://en.wikipedia.org/wiki/Jane_Eyre"]
    assert only_list.answer == "87" and only_list.aliases == ()
    assert qa.by_category() == {"Numerical reasoning": 2, "Multiple constraints": 1,
                                "Tabular reasoning": 1}
    assert all(item.grader == EXACT for item in qa.items)


@pytest.mark.parametrize("change, message", [
    ({"Answer": ["a", "b"]}, "field 'Answer' must be a string or a number, got array"),
    ({"wiki_links": 5}, "'wiki_links' must be a list or a string"),
    ({"reasoning_types": None}, "missing field 'reasoning_types'"),
    ({"answer": [1, 2]}, "field 'answer' must be a list of strings"),
])
def test_frames_bad_rows(tmp_path, change, message):
  rows = [FRAMES_ROWS[0], {**FRAMES_ROWS[1], **change}]
  path = write_jsonl(tmp_path / "f.jsonl", rows)
  with pytest.raises(QADataError, match=message) as e:
    load_frames(path)
  assert f"{path}, line 2: row 1:" in str(e.value)
  no_links = {k: v for k, v in FRAMES_ROWS[1].items() if k != "wiki_links"}
  with pytest.raises(QADataError, match="missing field 'wiki_links'"):
    load_frames(write_jsonl(tmp_path / "g.jsonl", [no_links]))


GSM8K_ROWS = [
    {"question": "Janet's ducks lay 16 eggs per day ...",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
               "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"},
    {"question": "How much profit?", "answer": "200,000-130,000=$70,000\n#### 70,000"},
    {"question": "What is the temperature change?", "answer": "It fell 5 degrees.\n#### -5"},
]


def test_gsm8k_final_numbers(tmp_path):
  qa = load_gsm8k(write_jsonl(tmp_path / "gsm.jsonl", GSM8K_ROWS))
  assert [i.answer for i in qa.items] == ["18", "70000", "-5"]
  assert [i.id for i in qa.items] == ["0", "1", "2"]          # row index when there is no id
  assert all(i.grader == NUMERIC and i.categories == ("gsm8k",) for i in qa.items)
  assert qa.items[0].meta["solution"].endswith("18 every day.")
  assert gsm8k_final_answer("no marker 12") is None
  assert gsm8k_final_answer("#### twelve") is None
  assert gsm8k_final_answer("a #### 1 then #### $3.5") == "3.5"


def test_gsm8k_missing_marker_is_named(tmp_path):
  rows = GSM8K_ROWS[:2] + [{"question": "q", "answer": "so the answer is 7"}]
  path = write_jsonl(tmp_path / "gsm.jsonl", rows)
  with pytest.raises(QADataError, match=r"line 3: row 2: field 'answer' must end with '#### "):
    load_gsm8k(path)


def test_generic_jsonl_and_broken_line(tmp_path):
  rows = [{"question": "Capital of Veloria?", "answer": "Trundle", "id": "v1",
           "category": "geo"},
          {"question": "17 * 3?", "answer": 51},
          {"question": "Largest moon?", "answer": "Ganymede", "id": 7, "category": None}]
  path = tmp_path / "qa.jsonl"
  path.write_text("\n" + "\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
  qa = load_jsonl(str(path))
  assert [(i.id, i.answer, i.categories, i.line) for i in qa.items] == [
      ("v1", "Trundle", ("geo",), 2), ("1", "51", ("uncategorized",), 3),
      ("7", "Ganymede", ("uncategorized",), 4)]

  lines = path.read_text().splitlines()
  lines.insert(3, '{"question": "broken", "answer": ')
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(QADataError, match=r"qa.jsonl, line 4: invalid JSON"):
    load_jsonl(str(path))

  dup = write_jsonl(tmp_path / "dup.jsonl", [rows[0], {**rows[1], "id": "v1"}])
  with pytest.raises(QADataError, match=r"line 2: row 1: duplicate id 'v1' \(first at line 1\)"):
    load_jsonl(dup)
  not_object = write_jsonl(tmp_path / "list.jsonl", [rows[0], ["q", "a"]])
  with pytest.raises(QADataError, match="line 2: row 1: expected a JSON object, got a JSON array"):
    load_jsonl(not_object)


def test_broken_json_array_names_the_line(tmp_path):
  path = tmp_path / "hle.json"
  text = json.dumps(HLE_ROWS[:2], indent=4)
  broken = text.replace('"answer": "B",', '"answer": "B"', 1)           # a missing comma
  path.write_text(broken)
  bad_line = next(i for i, l in enumerate(broken.splitlines(), 1) if '"answer": "B"' in l) + 1
  with pytest.raises(QADataError, match=rf"hle.json, line {bad_line}: invalid JSON"):
    load_hle(str(path))
  path.write_text(text.rstrip("]").rstrip())
  with pytest.raises(QADataError, match="missing closing"):
    load_hle(str(path))
  path.write_text(text + "\n{}")
  with pytest.raises(QADataError, match="unexpected text after the closing"):
    load_hle(str(path))


def test_unreadable_files(tmp_path):
  with pytest.raises(QADataError, match="no such file"):
    list(read_rows(str(tmp_path / "missing.jsonl")))
  (tmp_path / "empty.jsonl").write_text("\n  \n")
  with pytest.raises(QADataError, match="file is empty"):
    list(read_rows(str(tmp_path / "empty.jsonl")))
  (tmp_path / "latin1.jsonl").write_bytes('{"question": "caf\xe9"}'.encode("latin-1"))
  with pytest.raises(QADataError, match="not UTF-8"):
    list(read_rows(str(tmp_path / "latin1.jsonl")))
  with pytest.raises(QADataError, match="unknown benchmark"):
    load_benchmark("mmlu", str(tmp_path / "empty.jsonl"))
