"""toolscale-mini: determinism, splits, answer keys, grading, search, teacher demos, experts."""

import asyncio
import collections
import json
import math
import random
import re

import pytest

from orchestra.envs import SimulatedExpert, Task, ToolScaleMini, default_experts
from orchestra.tools import build_tool

SPLITS = ("train", "validation", "test")
DOC = re.compile(r"^(\w+) has population (\d+), was founded in (\d+), "
                 r"and has (\d+) bridges and (\d+) towers\.$")
LOOKUP = [(re.compile(r"^What is the population of (\w+)\?$"), "population"),
          (re.compile(r"^How many people live in (\w+)\?$"), "population"),
          (re.compile(r"^(?:In what year|When) was (\w+) founded\?$"), "founded"),
          (re.compile(r"^How many (bridges|towers) (?:does|are in) (\w+)(?: have)?\?$"), None)]
TIMES = re.compile(r"^What is the number of (bridges|towers) of (\w+) times (\d)\?$")
PLUS = re.compile(r"^What is the number of (bridges|towers) of (\w+) plus "
                  r"the number of (bridges|towers) of (\w+)\?$")
ARITHMETIC = re.compile(r"^What is (\d{2,3}) ([-+*]) (\d{2,3})\?$")


@pytest.fixture(scope="module")
def env():
  return ToolScaleMini(seed=0)


@pytest.fixture(scope="module")
def index_dir(env, tmp_path_factory):
  return env.build_search_index(str(tmp_path_factory.mktemp("kb") / "index"))


def gather(coroutines):
  """Runs the coroutines concurrently on a fresh event loop; their results, in order."""
  async def main():
    return await asyncio.gather(*coroutines)
  return asyncio.run(main())


def all_tasks(env):
  return [task for split in SPLITS for task in env.tasks(split)]


def kb(env):
  """name -> attributes, parsed back from the document sentences."""
  table = {}
  for doc in env.documents():
    m = DOC.match(doc["text"])
    assert m and m[1] == doc["title"], doc
    table[m[1]] = dict(zip(("population", "founded", "bridges", "towers"), map(int, m.groups()[1:])))
  return table


def expected_answer(task, table):
  """The answer recomputed from the question and the documents alone."""
  if task.kind == "arithmetic":
    a, op, b = ARITHMETIC.match(task.question).groups()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
  if task.kind == "lookup":
    for pattern, attribute in LOOKUP:
      m = pattern.match(task.question)
      if m:
        if attribute is None:
          attribute, name = m.groups()
        else:
          name = m[1]
        assert name == task.entity
        return table[name][attribute]
    raise AssertionError(f"unexpected lookup question {task.question!r}")
  m = TIMES.match(task.question)
  if m:
    assert m[2] == task.entity
    return table[m[2]][m[1]] * int(m[3])
  m = PLUS.match(task.question)
  assert m, task.question
  assert m[2] == task.entity and m[2] != m[4]
  return table[m[2]][m[1]] + table[m[4]][m[3]]


def test_same_seed_same_environment_other_seed_differs(env):
  again, other = ToolScaleMini(seed=0), ToolScaleMini(seed=1)
  assert again.documents() == env.documents()
  for split in SPLITS:
    assert again.tasks(split) == env.tasks(split)
  assert other.documents() != env.documents()
  assert [t.question for t in other.tasks("train")] != [t.question for t in env.tasks("train")]


def test_knowledge_base_has_unique_names_and_in_range_attributes(env):
  docs = env.documents()
  assert len(docs) == 48
  assert len({d["title"] for d in docs}) == 48 and len({d["id"] for d in docs}) == 48
  for attributes in kb(env).values():
    assert 1000 <= attributes["population"] <= 9999 and 1200 <= attributes["founded"] <= 1999
    assert 2 <= attributes["bridges"] <= 60 and 2 <= attributes["towers"] <= 60


def test_splits_are_disjoint_balanced_and_sized(env):
  sizes = {split: collections.Counter(t.kind for t in env.tasks(split)) for split in SPLITS}
  assert sizes == {"train": {"arithmetic": 240, "lookup": 240, "multihop": 240},
                   "validation": {"arithmetic": 30, "lookup": 30, "multihop": 30},
                   "test": {"arithmetic": 30, "lookup": 30, "multihop": 30}}
  for split in SPLITS:
    assert all(t.split == split for t in env.tasks(split))
  tasks = all_tasks(env)
  assert len({t.id for t in tasks}) == len({t.question for t in tasks}) == 900
  train = {t.question for t in env.tasks("train")}
  assert not train & {t.question for t in env.tasks("test") + env.tasks("validation")}
  small = ToolScaleMini(seed=3, n_entities=10, n_tasks=30, split_fractions=(0.6, 0.2, 0.2))
  assert [len(small.tasks(s)) for s in SPLITS] == [18, 6, 6]


def test_every_answer_agrees_with_the_documents(env):
  table = kb(env)
  for task in all_tasks(env):
    assert task.answer == str(expected_answer(task, table)), task
    assert (task.entity is None) == (task.kind == "arithmetic")


def test_unknown_split_and_bad_sizes_are_refused(env):
  with pytest.raises(ValueError, match="'dev'"):
    env.tasks("dev")
  with pytest.raises(ValueError, match="n_entities"):
    ToolScaleMini(n_entities=4, n_tasks=900)
  with pytest.raises(ValueError, match="split_fractions"):
    ToolScaleMini(split_fractions=(0.8, 0.3, 0.1))


def test_grade_normalises_and_compares_numbers(env):
  task = Task("t", "lookup", "What is the population of X?", "4821", "X", "test")
  for answer in ("4821", " 4821 ", "4821.", "4,821", "04821", "+4821"):
    assert env.grade(task, answer), answer
  for answer in ("4822", "", "about 4821", None):
    assert not env.grade(task, answer), answer
  words = Task("w", "lookup", "?", "Blue Door", None, "test")
  assert env.grade(words, "  blue door. ") and not env.grade(words, "red door")


def test_corpus_and_texts_cover_documents_and_questions(env, tmp_path):
  path = tmp_path / "corpus.jsonl"
  env.write_corpus(str(path))
  assert [json.loads(line) for line in path.read_text().splitlines()] == env.documents()
  texts = set(env.texts())
  assert {d["text"] for d in env.documents()} <= texts
  assert {t.question for t in all_tasks(env)} <= texts
  assert {f"The answer is {t.answer}." for t in all_tasks(env)} <= texts


def test_search_index_finds_the_entity_of_each_lookup(env, index_dir):
  search = build_tool({"type": "local_search", "index_dir": index_dir, "top_k": 1})
  lookups = [t for t in all_tasks(env) if t.kind == "lookup"]

  async def first_hit(task):
    (name, args), _ = env.teacher_calls(task, ("local_search",), random.Random(0))
    assert name == "local_search" and task.entity in args["query"]
    return await search(args)

  results = gather(first_hit(t) for t in lookups)
  for task, result in zip(lookups, results, strict=True):
    assert result.error is None and result.cost_usd > 0
    title = result.text.split("\n")[0].split(") ", 1)[1]
    assert title == task.entity and re.search(rf"\b{task.answer}\b", result.text), result.text


def test_teacher_demonstrations_run_against_the_real_tools(env, index_dir):
  tools = {"code_interpreter": build_tool({"type": "code_interpreter"}),
           "local_search": build_tool({"type": "local_search", "index_dir": index_dir,
                                       "top_k": 1})}
  rng = random.Random(0)
  tasks = [t for t in env.tasks("test") if t.kind != "lookup"][:24]

  async def replay(task):
    calls = env.teacher_calls(task, tuple(tools), rng)
    assert calls[-1] == ("answer", {"answer": task.answer})
    return calls, [await tools[name](args) for name, args in calls[:-1]]

  for task, (calls, results) in zip(tasks, gather(map(replay, tasks)),
                                    strict=True):
    names = [name for name, _ in calls]
    n_search = 0 if task.kind == "arithmetic" else 1 + (" plus " in task.question)
    assert names == ["local_search"] * n_search + ["code_interpreter", "answer"]
    for (_, args), result in zip(calls[:n_search], results[:n_search], strict=True):
      assert result.text.split("\n")[0].endswith(f") {args['query']}")
    assert results[-1].error is None
    assert results[-1].text.split("stdout:\n")[1].strip() == task.answer


def test_teacher_mixes_in_experts_and_uses_only_offered_tools(env):
  rng = random.Random(1)
  names = ("code_interpreter", "local_search", "expert-small", "expert-large")
  tasks = env.tasks("train")
  firsts = collections.Counter(env.teacher_calls(t, names, rng)[0][0] for t in tasks)
  expert_share = (firsts["expert-small"] + firsts["expert-large"]) / len(tasks)
  assert 0.4 < expert_share < 0.6 and min(firsts.values()) > 50
  for task in tasks[:60]:
    only_experts = env.teacher_calls(task, ("expert-large",), rng)   # the expert answers: final
    assert only_experts == [("expert-large", {"prompt": task.question})]
    for name, _ in env.teacher_calls(task, ("code_interpreter",), rng)[:-1]:
      assert name == "code_interpreter"
    assert env.teacher_calls(task, (), rng) == [("answer", {"answer": task.answer})]


def test_teacher_favours_the_preferred_expert_half_the_time(env):
  rng = random.Random(2)
  names = ("code_interpreter", "local_search", "expert-small", "expert-large", "expert-batch")
  firsts = collections.Counter(
      env.teacher_calls(t, names, rng, preferred_expert="expert-batch")[0][0]
      for t in env.tasks("train") for _ in range(4))
  n_expert = firsts["expert-small"] + firsts["expert-large"] + firsts["expert-batch"]
  assert abs(firsts["expert-batch"] / n_expert - (0.5 + 0.5 / 3)) < 0.04     # 2/3 expected
  assert abs(firsts["expert-small"] / n_expert - 0.5 / 3) < 0.04


def ask(expert, tasks, calls=1):
  """Each task's replies from a fresh bound tool, `calls` calls each."""
  async def one(task):
    tool = expert.for_task(task)
    return [await tool({"prompt": task.question}) for _ in range(calls)]
  return gather(map(one, tasks))


def test_default_experts_match_their_configured_accuracy(env):
  experts = {e.name: e for e in default_experts(0)}
  assert set(experts) == {"expert-small", "expert-large", "expert-batch"}
  assert experts["expert-batch"].accuracy == experts["expert-large"].accuracy
  assert experts["expert-batch"].price_in_per_1m < experts["expert-large"].price_in_per_1m
  assert experts["expert-batch"].latency_s > experts["expert-large"].latency_s
  assert experts["expert-small"].price_in_per_1m < experts["expert-large"].price_in_per_1m
  assert experts["expert-small"].latency_s < experts["expert-large"].latency_s
  tasks = env.tasks("train")
  for expert in experts.values():
    replies = ask(expert, tasks)
    for kind in ("arithmetic", "lookup", "multihop"):
      correct = [env.grade(t, r[0].text.removeprefix("The answer is "))
                 for t, r in zip(tasks, replies, strict=True) if t.kind == kind]
      assert abs(sum(correct) / len(correct) - expert.accuracy[kind]) < 0.1, (expert.name, kind)
    for task, (result,) in zip(tasks, replies, strict=True):
      assert re.fullmatch(r"The answer is -?\d+\.", result.text) and result.error is None
      assert result.latency_s == expert.latency_s
      assert result.final and result.usage["answer"] == result.text[14:-1]
      assert abs(int(result.text[14:-1]) - int(task.answer)) <= 9


def test_expert_cost_schema_and_errors():
  expert = SimulatedExpert("oracle", "always right", price_in_per_1m=2.0, price_out_per_1m=8.0,
                           latency_s=3.5, accuracy={"arithmetic": 1.0, "lookup": 1.0,
                                                    "multihop": 1.0})
  task = Task("t1", "arithmetic", "What is 2 + 3?", "5", None, "test")
  tool = expert.for_task(task)
  assert tool.name == "oracle" and tool.parameters["required"] == ["prompt"]
  result = asyncio.run(tool({"prompt": "What is 2 + 3?"}))
  assert result.text == "The answer is 5." and result.latency_s == 3.5
  prompt_tokens, output_tokens = 200 + math.ceil(5 * 1.3), math.ceil(4 * 1.3)
  assert result.usage["prompt_tokens"] == prompt_tokens == 207
  assert result.usage["completion_tokens"] == output_tokens == 6
  assert result.cost_usd == pytest.approx((207 * 2.0 + 6 * 8.0) / 1e6)
  assert asyncio.run(tool({"prompt": "  "})).error == "empty prompt"
  assert asyncio.run(tool({})).error is not None
  with pytest.raises(ValueError, match="multihop"):
    SimulatedExpert("x", "x", 1.0, 1.0, 1.0, {"arithmetic": 0.5, "lookup": 0.5})


def test_expert_replies_are_reproducible_per_seed_task_and_call(env):
  tasks = env.tasks("validation")
  small = lambda seed: next(e for e in default_experts(seed) if e.name == "expert-small")
  texts = lambda replies: [[r.text for r in rs] for rs in replies]
  first = texts(ask(small(0), tasks, calls=3))
  assert texts(ask(small(0), tasks, calls=3)) == first
  assert texts(ask(small(1), tasks, calls=3)) != first
  assert any(len(set(rs)) > 1 for rs in first)   # a retry may get another reply
