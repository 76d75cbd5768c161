"""toolscale-mini: a seeded, offline, procedural task environment for a tiny orchestrator.

Everything is generated from `seed`, so a run is reproducible and needs no network:

* A knowledge base of fictional entities (made-up names built from syllables, so no
  answer can come from pretraining). Each entity has four integer attributes and is one
  short document, e.g.
    {"id": "e007", "title": "Veloria",
     "text": "Veloria has population 4821, was founded in 1432, and has 17 bridges and 9 towers."}
* Tasks of three kinds, balanced, with short questions and exact integer answers:
    arithmetic  "What is 347 * 29?"                                  needs computation
    lookup      "How many bridges does Veloria have?"                needs search
    multihop    "What is the number of bridges of Veloria times 7?"  needs search, then computation
                "What is the number of bridges of Veloria plus the number of towers of Kestra?"
  Questions are unique, and each kind is split 80/10/10 into train/validation/test by a
  seeded shuffle, so a test question never appears in train.
* Tools: the real `local_search` (over `build_search_index`) and `code_interpreter` are
  nearly free but take several turns, and the policy must then copy the number into
  `answer` itself; `SimulatedExpert`s stand in for LLM tools.

SIMULATED EXPERTS. `SimulatedExpert` is NOT a language model: it is an offline stand-in
for an LLM tool. Like the paper's `answer` models (answer-1..4: "an LLM writes the final
answer"), an expert *answers the task*: calling it ends the episode and its reply is the
graded answer. Its bound tool reads the task's answer key and is correct with a
configured per-kind probability, otherwise off by 1-9. It never sleeps: it declares its
latency and charges a token price, so cost/latency trade-offs can be trained on a CPU in
minutes. `default_experts` gives a cheap one that is only good at arithmetic, an
expensive accurate one, and the same accurate model cheaper but very slow (a batch
queue), so the best choice depends on both the task kind and the user's preference.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from orchestra.tools.base import Tool, ToolResult
from orchestra.tools.embedders import HashingEmbedder
from orchestra.tools.local_search import Hit, build_index, format_hits

KINDS = ("arithmetic", "lookup", "multihop")
SPLITS = ("train", "validation", "test")
REAL_TOOLS = ("code_interpreter", "local_search")
ATTRIBUTES = {"population": (1000, 9999), "founded": (1200, 1999),
              "bridges": (2, 60), "towers": (2, 60)}
SYLLABLES = ("ka", "lo", "ve", "ri", "ta", "mon", "dor", "sel", "bra", "nis", "qua", "zen",
             "fi", "gor", "ash", "mel", "tri", "vo", "lun", "par", "esh", "ki", "dra", "sol")
LOOKUP_TEMPLATES = {
    "population": ("What is the population of {e}?", "How many people live in {e}?"),
    "founded": ("In what year was {e} founded?", "When was {e} founded?"),
    "bridges": ("How many bridges does {e} have?", "How many bridges are in {e}?"),
    "towers": ("How many towers does {e} have?", "How many towers are in {e}?"),
}
MULTIHOP_ATTRIBUTES = ("bridges", "towers")
OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
EXPERT_PROBABILITY = 0.5        # how often a teacher demonstration lets an expert answer
PREFERRED_PROBABILITY = 0.5     # how often that expert is the caller's preferred one
SYSTEM_PROMPT_TOKENS = 200      # fixed input overhead of every simulated expert call
TOKENS_PER_WORD = 1.3           # token estimate of the simulated experts: ceil(words * 1.3)


@dataclasses.dataclass(frozen=True)
class Task:
  id: str
  kind: str                     # one of KINDS
  question: str
  answer: str                   # an exact integer, as a string
  entity: str | None            # the (first) entity the question names; None for arithmetic
  split: str                    # one of SPLITS


@dataclasses.dataclass(frozen=True)
class _Entity:
  id: str
  name: str
  attributes: dict[str, int]


@dataclasses.dataclass(frozen=True)
class _Draft:
  """A task before its split is known, with what the teacher needs to demonstrate it."""
  kind: str
  question: str
  answer: int
  entities: tuple[str, ...]     # entities to search for, in order
  code: str | None              # the computation, as a Python program, if one is needed


def document_text(entity: _Entity) -> str:
  """The one-sentence document of an entity."""
  a = entity.attributes
  return (f"{entity.name} has population {a['population']}, was founded in {a['founded']}, "
          f"and has {a['bridges']} bridges and {a['towers']} towers.")


def _attribute_phrase(attribute: str, name: str) -> str:
  """`the number of bridges of Veloria` (a multihop operand)."""
  return f"the number of {attribute} of {name}"


class ToolScaleMini:
  """The knowledge base, the tasks and their splits, grading and teacher demonstrations."""

  def __init__(self, seed: int = 0, n_entities: int = 48, n_tasks: int = 900,
               split_fractions: Sequence[float] = (0.8, 0.1, 0.1)):
    if len(split_fractions) != 3 or min(split_fractions) < 0 or \
        not math.isclose(sum(split_fractions), 1.0):
      raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1 "
                       f"(train, validation, test), got {tuple(split_fractions)}")
    if n_entities < 2:
      raise ValueError(f"n_entities must be >= 2, got {n_entities}")
    self.seed, self.n_entities, self.n_tasks = seed, n_entities, n_tasks
    self._entities = _make_entities(random.Random(f"toolscale-mini:{seed}:kb"), n_entities)
    drafts = self._make_drafts(random.Random(f"toolscale-mini:{seed}:tasks"))
    splits = _assign_splits(drafts, split_fractions, random.Random(f"toolscale-mini:{seed}:split"))
    self._drafts = {}
    self._tasks = {split: [] for split in SPLITS}
    for i, (draft, split) in enumerate(zip(drafts, splits, strict=True)):
      task = Task(id=f"{seed}-{draft.kind}-{i:04d}", kind=draft.kind, question=draft.question,
                  answer=str(draft.answer), entity=draft.entities[0] if draft.entities else None,
                  split=split)
      self._drafts[task.id] = draft
      self._tasks[split].append(task)

  def documents(self) -> list[dict[str, Any]]:
    """One {"id", "title", "text"} per entity."""
    return [{"id": e.id, "title": e.name, "text": document_text(e)} for e in self._entities]

  def tasks(self, split: str) -> list[Task]:
    """The tasks of `split` (train, validation or test), kinds interleaved."""
    if split not in self._tasks:
      raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return list(self._tasks[split])

  def write_corpus(self, path: str) -> None:
    """Writes the documents as a JSONL corpus (the input of `build_index`)."""
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(doc) + "\n" for doc in self.documents())

  def build_search_index(self, out_dir: str) -> str:
    """Builds a `local_search` index of the documents (hashing embedder, 256-dim) at `out_dir`."""
    with tempfile.TemporaryDirectory(prefix="toolscale_mini_") as tmp:
      corpus = os.path.join(tmp, "corpus.jsonl")
      self.write_corpus(corpus)
      build_index(corpus, out_dir, HashingEmbedder(dim=256))
    return out_dir

  def grade(self, task: Task, answer: str | None) -> bool:
    """Whether `answer` matches `task.answer` after normalisation (see `normalise_answer`)."""
    if answer is None:
      return False
    given, expected = normalise_answer(answer), normalise_answer(task.answer)
    given_int, expected_int = _as_int(given), _as_int(expected)
    if given_int is not None and expected_int is not None:
      return given_int == expected_int
    return given == expected

  def texts(self) -> list[str]:
    """Every question and document plus the observations and calls episodes show (tokenizer data)."""
    docs = self.documents()
    texts = [d["text"] for d in docs] + [d["title"] for d in docs]
    texts += [format_hits([Hit(0.5, doc)], 800) for doc in docs]
    for split in SPLITS:
      for task in self._tasks[split]:
        draft = self._drafts[task.id]
        texts += [task.question, expert_reply(task.answer)]
        if draft.code:
          texts += [draft.code, f"exit code 0\nstdout:\n{task.answer}\n"]
    return texts

  def teacher_calls(self, task: Task, tool_names: Sequence[str], rng: random.Random,
                    preferred_expert: str | None = None,
                    expert_probability: float = EXPERT_PROBABILITY,
                    preferred_probability: float = PREFERRED_PROBABILITY
                    ) -> list[tuple[str, dict[str, Any]]]:
    """A scripted demonstration: (tool name, arguments) calls that end the episode.

    Either the competent real-tool plan: `local_search` for each entity the question
    names (the query is the entity name), then `code_interpreter` printing the
    computation, then `answer` with the right number. Or, with probability
    `expert_probability` (always when none of the plan's tools is offered), one call to
    an offered expert (any name in `tool_names` other than the real tools), which
    answers for the policy: `preferred_expert` (the caller's rule of thumb for the
    user's preference) with probability `preferred_probability`, else a uniform choice.
    The choice ignores the task kind, so the demonstrations mix good and poor choices
    and RL learns which expert suits which task. A plan step whose tool is not offered
    is skipped.
    """
    draft = self._drafts[task.id]
    plan = [("local_search", {"query": name}) for name in draft.entities]
    if draft.code:
      plan.append(("code_interpreter", {"code": draft.code}))
    plan = [(name, args) for name, args in plan if name in tool_names]
    experts = [name for name in tool_names if name not in REAL_TOOLS and name != "answer"]
    if experts and (not plan or rng.random() < expert_probability):
      if preferred_expert in experts and rng.random() < preferred_probability:
        return [(preferred_expert, {"prompt": task.question})]
      return [(rng.choice(experts), {"prompt": task.question})]
    return plan + [("answer", {"answer": task.answer})]

  def _make_drafts(self, rng: random.Random) -> list[_Draft]:
    """`n_tasks` drafts with unique questions, kinds cycling arithmetic, lookup, multihop."""
    kinds = [KINDS[i % len(KINDS)] for i in range(self.n_tasks)]
    lookups = iter(self._lookup_drafts(rng, kinds.count("lookup")))
    seen: set[str] = set()
    drafts = []
    for kind in kinds:
      if kind == "lookup":
        draft = next(lookups)
      else:
        make = _arithmetic_draft if kind == "arithmetic" else self._multihop_draft
        draft = make(rng)
        while draft.question in seen:
          draft = make(rng)
      seen.add(draft.question)
      drafts.append(draft)
    return drafts

  def _lookup_drafts(self, rng: random.Random, n: int) -> list[_Draft]:
    """`n` distinct lookup drafts, sampled from every (entity, attribute, phrasing)."""
    every = [_Draft("lookup", template.format(e=e.name), e.attributes[attribute], (e.name,), None)
             for e in self._entities for attribute, templates in LOOKUP_TEMPLATES.items()
             for template in templates]
    if n > len(every):
      raise ValueError(f"n_tasks={self.n_tasks} needs {n} distinct lookup questions but "
                       f"n_entities={self.n_entities} gives only {len(every)}; "
                       "raise n_entities or lower n_tasks")
    return rng.sample(every, n)

  def _multihop_draft(self, rng: random.Random) -> _Draft:
    """An attribute times a small number, or one entity's attribute plus another's."""
    first, second = rng.sample(self._entities, 2)
    attribute = rng.choice(MULTIHOP_ATTRIBUTES)
    value = first.attributes[attribute]
    if rng.random() < 0.5:
      k = rng.randint(2, 9)
      question = f"What is {_attribute_phrase(attribute, first.name)} times {k}?"
      return _Draft("multihop", question, value * k, (first.name,), f"print({value} * {k})")
    other_attribute = rng.choice(MULTIHOP_ATTRIBUTES)
    other = second.attributes[other_attribute]
    question = (f"What is {_attribute_phrase(attribute, first.name)} plus "
                f"{_attribute_phrase(other_attribute, second.name)}?")
    return _Draft("multihop", question, value + other, (first.name, second.name),
                  f"print({value} + {other})")


def _make_entities(rng: random.Random, n: int) -> list[_Entity]:
  """`n` entities with unique 2-3 syllable names and random attributes."""
  names: list[str] = []
  while len(names) < n:
    name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if name not in names:
      names.append(name)
  return [_Entity(f"e{i:03d}", name, {a: rng.randint(lo, hi) for a, (lo, hi) in ATTRIBUTES.items()})
          for i, name in enumerate(names)]


def _arithmetic_draft(rng: random.Random) -> _Draft:
  """`What is a op b?` with 2-3 digit operands; for `-` the larger comes first."""
  op = rng.choice(tuple(OPERATORS))
  a, b = rng.randint(10, 999), rng.randint(10, 999)
  if op == "-" and a < b:
    a, b = b, a
  return _Draft("arithmetic", f"What is {a} {op} {b}?", OPERATORS[op](a, b), (),
                f"print({a} {op} {b})")


def _assign_splits(drafts: list[_Draft], fractions: Sequence[float],
                   rng: random.Random) -> list[str]:
  """The split of each draft: per kind, a seeded shuffle cut at the fractions (rounded)."""
  splits = [""] * len(drafts)
  for kind in KINDS:
    indices = [i for i, d in enumerate(drafts) if d.kind == kind]
    rng.shuffle(indices)
    n_train = round(len(indices) * fractions[0])
    n_validation = round(len(indices) * fractions[1])
    for rank, i in enumerate(indices):
      splits[i] = ("train" if rank < n_train else
                   "validation" if rank < n_train + n_validation else "test")
  return splits


def normalise_answer(text: str) -> str:
  """Stripped, lowercased, one trailing '.' removed, commas inside numbers dropped."""
  text = text.strip().lower().removesuffix(".").strip()
  return re.sub(r"(?<=\d),(?=\d)", "", text)


def _as_int(text: str) -> int | None:
  """`text` as an integer, or None if it is not one."""
  try:
    return int(text)
  except ValueError:
    return None


def expert_reply(answer: str) -> str:
  """What a simulated expert says: `The answer is <answer>.`"""
  return f"The answer is {answer}."


def estimate_tokens(text: str) -> int:
  """Simulated token count: ceil(whitespace-separated words * 1.3), a common rule of thumb."""
  return math.ceil(len(text.split()) * TOKENS_PER_WORD)


class SimulatedExpert:
  """SIMULATED stand-in for an LLM tool (offline): a factory of per-task tools.

  `for_task(task)` returns a Tool that answers the task for the policy (the result is
  final: it ends the episode and `usage["answer"]` is graded) from the task's answer
  key: correct with probability `accuracy[task.kind]`, otherwise the true number plus
  or minus 1-9. The
  draw is seeded by (seed, expert name, task id, call index), so the n-th call on a task
  always gives the same reply. It does not sleep: `latency_s` is declared in the result.
  Cost is `(prompt_tokens * price_in_per_1m + output_tokens * price_out_per_1m) / 1e6`
  with tokens estimated by `estimate_tokens` and SYSTEM_PROMPT_TOKENS added to the prompt.
  The prompt's content does not change the reply, only the cost.
  """

  def __init__(self, name: str, description: str, price_in_per_1m: float,
               price_out_per_1m: float, latency_s: float, accuracy: dict[str, float],
               seed: int = 0):
    missing = [kind for kind in KINDS if kind not in accuracy]
    if missing:
      raise ValueError(f"expert {name!r}: accuracy has no entry for {missing}")
    if any(not 0.0 <= p <= 1.0 for p in accuracy.values()):
      raise ValueError(f"expert {name!r}: accuracies must be in [0, 1], got {accuracy}")
    if min(price_in_per_1m, price_out_per_1m, latency_s) < 0:
      raise ValueError(f"expert {name!r}: prices and latency_s must be >= 0")
    self.name, self.description = name, description
    self.price_in_per_1m, self.price_out_per_1m = float(price_in_per_1m), float(price_out_per_1m)
    self.latency_s, self.accuracy, self.seed = float(latency_s), dict(accuracy), seed

  def for_task(self, task: Task) -> Tool:
    """A fresh tool bound to `task` (its call index starts at 0)."""
    return _BoundExpert(self, task)

  def cost(self, prompt: str, reply: str) -> float:
    """Dollar cost of one call with this prompt and reply."""
    prompt_tokens = SYSTEM_PROMPT_TOKENS + estimate_tokens(prompt)
    return (prompt_tokens * self.price_in_per_1m
            + estimate_tokens(reply) * self.price_out_per_1m) / 1e6


class _BoundExpert(Tool):
  """A `SimulatedExpert` answering one task; see that class."""

  parameters = {
      "type": "object",
      "properties": {"prompt": {"type": "string", "description": "the question to ask"}},
      "required": ["prompt"],
      "additionalProperties": False,
  }

  def __init__(self, expert: SimulatedExpert, task: Task):
    self.name, self.description = expert.name, expert.description
    self.expert, self.task, self.calls = expert, task, 0

  async def run(self, args: dict[str, Any]) -> ToolResult:
    """Answers right or wrong by a seeded draw (final); declares latency, charges tokens."""
    prompt = args["prompt"].strip()
    if not prompt:
      return ToolResult(text="Error: prompt is empty; write the question", error="empty prompt")
    rng = random.Random(f"{self.expert.seed}:{self.name}:{self.task.id}:{self.calls}")
    self.calls += 1
    correct = rng.random() < self.expert.accuracy[self.task.kind]
    answer = int(self.task.answer)
    if not correct:
      answer += rng.choice((-1, 1)) * rng.randint(1, 9)
    reply = expert_reply(str(answer))
    return ToolResult(text=reply, cost_usd=self.expert.cost(prompt, reply),
                      latency_s=self.expert.latency_s, final=True,
                      usage={"prompt_tokens": SYSTEM_PROMPT_TOKENS + estimate_tokens(prompt),
                             "completion_tokens": estimate_tokens(reply), "correct": correct,
                             "answer": str(answer)})


def default_experts(seed: int = 0) -> list[SimulatedExpert]:
  """Three SIMULATED answering experts whose best use depends on the task kind and preference.

  * expert-small, a cheap math model ($0.1/$0.4 per 1M tokens, 1 s): nearly as good as
    expert-large at arithmetic, weak on facts about the fictional places.
  * expert-large ($10/$30 per 1M, 6 s): accurate on every kind.
  * expert-batch, the large model behind a batch queue ($2/$6 per 1M, 60 s): as accurate as
    expert-large, 80% cheaper, ten times slower.

  So a cost-minded policy sends arithmetic to expert-small and the rest to expert-batch, a
  latency-minded one the rest to expert-large, and an accuracy-minded one has no reason to
  prefer expert-small anywhere.
  """
  large = {"arithmetic": 0.99, "lookup": 0.97, "multihop": 0.95}
  return [
      SimulatedExpert("expert-small", "A small, fast, cheap math model; weak on facts.",
                      price_in_per_1m=0.10, price_out_per_1m=0.40, latency_s=1.0,
                      accuracy={"arithmetic": 0.93, "lookup": 0.3, "multihop": 0.2}, seed=seed),
      SimulatedExpert("expert-large", "A large, slow, expensive language model; usually right.",
                      price_in_per_1m=10.0, price_out_per_1m=30.0, latency_s=6.0,
                      accuracy=large, seed=seed),
      SimulatedExpert("expert-batch", "The large model behind a batch queue: cheaper, very slow.",
                      price_in_per_1m=2.0, price_out_per_1m=6.0, latency_s=60.0,
                      accuracy=large, seed=seed),
  ]
