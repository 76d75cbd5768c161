"""local_search: index building (library and launch script), the tool, and both embedders."""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys

import faiss
import numpy as np
import pytest

from orchestra.tools import ToolConfigError, build_tool
from orchestra.tools.embedders import HashingEmbedder, HFEncoderEmbedder, make_embedder
from orchestra.tools.local_search import (MAX_TOP_K, IndexBuildError, LocalSearch, build_index,
                                          doc_passage)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "launch", "build_index.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

CORPUS = [
    {"id": "zorblax", "title": "Zorblax Industries",
     "text": "Zorblax Industries builds glowing kelp batteries. It was founded by Mirela Quonsett "
             "in the harbour town of Vantrelle after a storm wrecked her fishing fleet."},
    {"id": "quibbleton", "title": "Quibbleton Observatory",
     "text": "The Quibbleton Observatory sits on Mount Ardrecht and tracks the twin comets "
             "Yssa and Morv. Its brass telescope was cast in a single night."},
    {"id": "fennimore", "title": "Fennimore Drupp",
     "text": "Fennimore Drupp was a cartographer who mapped the underground rivers of Kessk. "
             "He drew every map with ink pressed from blue thornberries."},
    {"id": "velaquin", "title": "Velaquin Treaty",
     "text": "The Velaquin Treaty ended the salt war between the duchies of Orrow and Plimm. "
             "It was signed on a raft in the middle of Lake Sedder."},
    {"id": "grommet", "title": "Grommetberry pie",
     "text": "Grommetberry pie is a dessert from the valley of Tannifer, baked with purple "
             "grommetberries, goat butter and a crust of crushed hazel."},
    {"id": "xathrian", "title": "Xathrian Lighthouse",
     "text": "The Xathrian Lighthouse guides ships past the Gullet Rocks. Its keeper, Oswin "
             "Pellacorde, logged eleven thousand storms over forty years."},
    {"id": "brindlewick", "title": "Brindlewick Academy",
     "text": "Brindlewick Academy teaches clockwork engineering to children of the Ostmark "
             "provinces. Its motto is 'every gear a promise'."},
    {"id": "ulmsted", "title": "Ulmsted Marathon",
     "text": "The Ulmsted Marathon is run each spring across frozen Lake Ulm. The record of two "
             "hours and nine minutes belongs to the runner Dasha Korvintsk."},
    {"id": "pellinore", "title": "Pellinore Circus",
     "text": "The Pellinore Circus travels with trained river otters and a juggling troupe "
             "called the Seven Spoons. It winters in the town of Haddlemoor."},
    {"id": "skarrow", "title": "Skarrow Bridge",
     "text": "Skarrow Bridge crosses the Wendle gorge on ropes woven from spider silk. Engineer "
             "Talmira Oskevin finished it in the year of the long drought."},
    {"id": "omberlin", "title": "Omberlin Language",
     "text": "Omberlin is a whistled language of the Cressfall islands. Speakers can carry a "
             "conversation across three kilometres of open water."},
    {"id": "tavrosk", "title": "Tavrosk Cheese",
     "text": "Tavrosk cheese ripens for seven years in caves beneath the Harl mountains and is "
             "washed weekly with pine vinegar."},
    {"id": "lumeris", "title": "Lumeris Festival",
     "text": "During the Lumeris Festival the city of Quorvath floats ten thousand paper lanterns "
             "down the river Ebbe to honour the moth goddess Nyssara."},
    {"id": "drovack", "title": "Drovack Engine",
     "text": "The Drovack Engine, invented by Hestia Marrowvane, turns tidal pressure into "
             "electricity using a ring of ceramic pistons."},
    {"id": "wimbleshank", "title": "Wimbleshank Library",
     "text": "The Wimbleshank Library lends books by carrier pigeon to farms in the Ostvale "
             "hills. Its oldest volume is a herbal written on birch bark."},
]
QUERIES = [  # (question naming one entity, id of the document about it)
    ("Who founded Zorblax Industries?", "zorblax"),
    ("What comets does the Quibbleton Observatory track?", "quibbleton"),
    ("which ink did Fennimore Drupp use for his maps", "fennimore"),
    ("Where was the Velaquin Treaty signed?", "velaquin"),
    ("Who kept the Xathrian lighthouse", "xathrian"),
    ("record holder of the Ulmsted marathon", "ulmsted"),
    ("how long does tavrosk cheese ripen", "tavrosk"),
    ("who invented the drovack engine", "drovack"),
]


def write_jsonl(path, lines):
  """Writes each entry as one line: dicts as JSON, strings verbatim."""
  with open(path, "w", encoding="utf-8") as f:
    f.writelines((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
  return str(path)


def run_build_script(*args):
  """Runs launch/build_index.py in a fresh interpreter; returns the CompletedProcess."""
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=ENV,
                        timeout=120)


def search(tool, args):
  """`await tool(args)` from synchronous test code."""
  return asyncio.run(tool(args))


def ranked(text):
  """(score, title) per `[rank] (score s) Title` header of a result text, in order."""
  return [(float(s), t) for s, t in re.findall(r"^\[\d+\] \(score (-?[\d.]+)\) (.*)$", text, re.M)]


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
  return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", CORPUS)


@pytest.fixture(scope="module")
def hashing_index(corpus_path, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("indexes") / "hashing")
  build_index(corpus_path, out, HashingEmbedder(dim=512), batch_size=4)
  return out


@pytest.fixture(scope="module")
def tool(hashing_index):
  return LocalSearch(hashing_index)


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
  """A random 1-layer BERT and a WordPiece tokenizer trained on the corpus, in one HF folder."""
  import torch
  import transformers
  from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                          trainers)
  special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
  wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  wordpiece.decoder = decoders.WordPiece()
  wordpiece.train_from_iterator([doc_passage(d) for d in CORPUS],
                                trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
  cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
  wordpiece.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  path = str(tmp_path_factory.mktemp("tiny_bert"))
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
      sep_token="[SEP]", mask_token="[MASK]").save_pretrained(path)
  config = transformers.BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=32,
                                   num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                   pad_token_id=wordpiece.token_to_id("[PAD]"))
  torch.manual_seed(0)
  transformers.BertModel(config).save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def hf_index(corpus_path, hf_model_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("indexes") / "hf")
  build_index(corpus_path, out, HFEncoderEmbedder(hf_model_dir, batch_size=4), batch_size=6)
  return out


def test_build_index_writes_index_docs_and_meta(hashing_index):
  with open(os.path.join(hashing_index, "meta.json")) as f:
    meta = json.load(f)
  assert meta["count"] == len(CORPUS) and meta["dim"] == 512
  assert meta["embedder"] == HashingEmbedder(dim=512).spec()
  with open(os.path.join(hashing_index, "docs.jsonl")) as f:
    assert [json.loads(line) for line in f] == CORPUS
  index = faiss.read_index(os.path.join(hashing_index, "index.faiss"))
  assert (index.ntotal, index.d) == (len(CORPUS), 512)
  np.testing.assert_allclose(np.linalg.norm(index.reconstruct_n(0, index.ntotal), axis=1), 1.0,
                             rtol=1e-5)
  assert os.listdir(os.path.dirname(hashing_index)) == ["hashing"]   # no temporary folders left


@pytest.mark.slow
def test_build_script_matches_library_and_replaces_an_old_index(corpus_path, hashing_index,
                                                                tmp_path):
  out = str(tmp_path / "scripted")
  for _ in range(2):   # the second run replaces the first index in place
    proc = run_build_script(f"--corpus={corpus_path}", f"--out={out}", "--dim=512",
                            "--batch_size=5")
    assert proc.returncode == 0, proc.stderr
  assert f"indexed {len(CORPUS)} documents" in proc.stdout
  assert sorted(os.listdir(tmp_path)) == ["scripted"]
  scripted = faiss.read_index(os.path.join(out, "index.faiss"))
  library = faiss.read_index(os.path.join(hashing_index, "index.faiss"))
  np.testing.assert_array_equal(scripted.reconstruct_n(0, scripted.ntotal),
                                library.reconstruct_n(0, library.ntotal))
  result = search(LocalSearch(out), {"query": "Who founded Zorblax Industries?"})
  assert ranked(result.text)[0][1] == "Zorblax Industries"


@pytest.mark.parametrize("query,doc_id", QUERIES)
def test_query_naming_an_entity_returns_its_document_first(tool, query, doc_id):
  assert tool.search(query, 3)[0].doc["id"] == doc_id
  result = search(tool, {"query": query})
  assert result.error is None
  title = next(d["title"] for d in CORPUS if d["id"] == doc_id)
  assert result.text.startswith("[1] (score ") and ranked(result.text)[0][1] == title


def test_scores_descend_and_top_k_is_respected_and_clamped(tool):
  query = "glowing kelp batteries of Vantrelle"
  default = search(tool, {"query": query})
  assert len(ranked(default.text)) == 3 and default.usage["top_k"] == 3
  five = ranked(search(tool, {"query": query, "top_k": 5}).text)
  scores = [s for s, _ in five]
  assert len(five) == 5 and scores == sorted(scores, reverse=True) and scores[0] > scores[1]
  too_many = search(tool, {"query": query, "top_k": 500})
  assert too_many.usage["top_k"] == MAX_TOP_K and len(ranked(too_many.text)) == len(CORPUS)
  assert len(ranked(search(tool, {"query": query, "top_k": 0}).text)) == 1


def test_cost_is_priced_per_query_token(hashing_index):
  query = "Where does the Pellinore Circus spend the winter?"
  result = search(LocalSearch(hashing_index, price_per_1m_tokens=0.5), {"query": query})
  tokens = HashingEmbedder().count_tokens(query)
  assert tokens == 9 and result.usage == {"query_tokens": tokens, "top_k": 3}
  assert result.cost_usd == pytest.approx(tokens * 0.5 / 1e6) and result.cost_usd > 0
  assert result.latency_s > 0


def test_long_passages_are_truncated(hashing_index):
  result = search(LocalSearch(hashing_index, top_k=1, max_passage_chars=20), {"query": "Zorblax"})
  assert result.text == "[1] (score %.2f) Zorblax Industries\nZorblax Industries b..." % (
      ranked(result.text)[0][0])


def test_build_tool_constructs_local_search_with_options(hashing_index):
  tool = build_tool({"type": "local_search", "index_dir": hashing_index, "top_k": 2})
  assert isinstance(tool, LocalSearch) and tool.top_k == 2
  assert tool.schema()["function"]["name"] == "local_search"
  assert tool.schema()["function"]["parameters"]["required"] == ["query"]
  assert len(ranked(search(tool, {"query": "Skarrow Bridge"}).text)) == 2


@pytest.mark.parametrize("args", [{}, {"query": 3}, {"query": "x", "top_k": "5"},
                                  {"query": "x", "top_k": True}, {"query": "x", "k": 2},
                                  {"query": "   "}, ["query"]])
def test_bad_arguments_give_error_results(tool, args):
  result = search(tool, args)
  assert result.error and result.text.startswith("Error:") and result.cost_usd == 0


def test_missing_index_dir_is_a_config_error_naming_the_build_command(tmp_path):
  missing = str(tmp_path / "no_such_index")
  with pytest.raises(ToolConfigError,
                     match=r"no_such_index.*python launch/build_index.py --corpus"):
    build_tool({"type": "local_search", "index_dir": missing})


def test_corrupt_index_or_bad_options_are_config_errors(hashing_index, tmp_path):
  broken = str(tmp_path / "broken")
  shutil.copytree(hashing_index, broken)
  os.remove(os.path.join(broken, "index.faiss"))
  with pytest.raises(ToolConfigError, match=r"corrupt.*launch/build_index.py"):
    LocalSearch(broken)
  with open(os.path.join(broken, "meta.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(ToolConfigError, match="corrupt"):
    LocalSearch(broken)
  with pytest.raises(ToolConfigError, match="top_k"):
    build_tool({"type": "local_search", "index_dir": hashing_index, "top_k": 0})
  with pytest.raises(ToolConfigError, match="unexpected keyword"):
    build_tool({"type": "local_search", "index_dir": hashing_index, "topk": 2})


@pytest.mark.slow
@pytest.mark.parametrize("bad_line,problem", [
    ('{"id": "x", "title": "Broken", "text": "no closing brace"', "invalid JSON"),
    ({"id": "x", "title": "No text"}, "missing field(s) ['text']"),
])
def test_bad_corpus_line_fails_naming_file_and_line(tmp_path, bad_line, problem):
  corpus = write_jsonl(tmp_path / "bad.jsonl", [CORPUS[0], CORPUS[1], bad_line, CORPUS[2]])
  out = tmp_path / "index"
  proc = run_build_script(f"--corpus={corpus}", f"--out={out}")
  assert proc.returncode != 0
  assert f"{corpus}, line 3: {problem}" in proc.stderr and "Traceback" not in proc.stderr
  assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]   # nothing written
  with pytest.raises(IndexBuildError, match=re.escape(f"{corpus}, line 3: {problem}")):
    build_index(corpus, str(out), HashingEmbedder())


def test_hashing_embedder_is_deterministic_across_processes():
  texts = ["Zorblax Industries builds glowing kelp batteries.", "Omberlin is whistled", ""]
  code = ("import json, sys; from orchestra.tools.embedders import make_embedder; "
          "e = make_embedder(json.loads(sys.argv[1])); "
          "print(json.dumps(e.embed(json.loads(sys.argv[2])).tolist()))")
  spec = {"type": "hashing", "dim": 64}
  proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), json.dumps(texts)],
                        capture_output=True, text=True, timeout=60,
                        env={**ENV, "PYTHONHASHSEED": "12345"})
  assert proc.returncode == 0, proc.stderr
  here = make_embedder(spec).embed(texts)
  assert here.dtype == np.float32 and here.shape == (3, 64)
  np.testing.assert_array_equal(np.array(json.loads(proc.stdout), np.float32), here)
  np.testing.assert_allclose(np.linalg.norm(here, axis=1), [1.0, 1.0, 0.0], rtol=1e-6)


def test_hf_embedder_mean_pools_over_the_mask_and_normalises(hf_model_dir):
  embedder = make_embedder({"type": "hf", "model_dir": hf_model_dir, "batch_size": 8})
  assert isinstance(embedder, HFEncoderEmbedder) and embedder.dim == 32
  short, long = "Omberlin is whistled", doc_passage(CORPUS[0]) + " " + doc_passage(CORPUS[1])
  alone = embedder.embed([short])
  batched = embedder.embed([long, short])   # `short` is padded to the length of `long`
  assert batched.dtype == np.float32 and batched.shape == (2, 32)
  np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)
  assert embedder.count_tokens(short) > 2   # [CLS] ... [SEP]


def test_hf_index_returns_an_exact_duplicate_first(hf_index):
  tool = build_tool({"type": "local_search", "index_dir": hf_index, "top_k": 5})
  for doc in CORPUS[:5]:
    hits = tool.search(doc_passage(doc), 5)
    assert hits[0].doc["id"] == doc["id"] and hits[0].score == pytest.approx(1.0, abs=1e-4)
  result = search(tool, {"query": "Tavrosk cheese"})
  assert result.error is None and len(ranked(result.text)) == 5 and result.cost_usd > 0


@pytest.mark.parametrize("index", ["hashing_index", "hf_index"])
def test_concurrent_searches_all_succeed(request, index):
  tool = LocalSearch(request.getfixturevalue(index))
  queries = [doc_passage(doc) for doc in CORPUS] + [q for q, _ in QUERIES]

  async def main():
    return await asyncio.gather(*(tool({"query": q, "top_k": 2}) for q in queries[:16]))

  results = asyncio.run(main())
  assert len(results) == 16 and all(r.error is None for r in results)
  for result, doc in zip(results, CORPUS):
    assert ranked(result.text)[0][1] == doc["title"]
