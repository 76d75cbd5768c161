"""Dense retrieval over a local corpus: index building and the `local_search` tool.

An index folder holds
  index.faiss   FAISS `IndexFlatIP` over L2-normalised passage embeddings (score = cosine),
  docs.jsonl    one {"id", "title", "text"} per line, in index order,
  meta.json     {"embedder": spec, "count": N, "dim": D, ...}; the spec rebuilds the embedder.

Build one with `build_index` (or `python launch/build_index.py --corpus ... --out ...`)
from a JSONL corpus whose lines are objects with `id` (string or integer), `title` and
`text` (strings). A document is embedded as its passage: title and text on two lines.

  tool = build_tool({"type": "local_search", "index_dir": "indexes/wiki", "top_k": 3})
  result = await tool({"query": "who founded Zorblax Industries?"})
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import faiss
import numpy as np

from orchestra.tools.base import Tool, ToolConfigError, ToolResult
from orchestra.tools.embedders import Embedder, EmbedderError, make_embedder

INDEX_FILE, DOCS_FILE, META_FILE = "index.faiss", "docs.jsonl", "meta.json"
FORMAT_VERSION = 1
MAX_TOP_K = 20
BUILD_COMMAND = "python launch/build_index.py --corpus CORPUS.jsonl --out {out}"


class IndexBuildError(ValueError):
  """A corpus or output folder that cannot be indexed; the message names the file, line and fix."""


class Hit(NamedTuple):
  score: float               # inner product of unit vectors, i.e. cosine similarity
  doc: dict[str, Any]        # {"id", "title", "text"}


def doc_passage(doc: dict[str, Any]) -> str:
  """The text embedded for a document: its title and text on separate lines."""
  return f"{doc['title']}\n{doc['text']}" if doc["title"] else doc["text"]


def read_corpus(path: str) -> Iterator[dict[str, Any]]:
  """Yields {"id", "title", "text"} for each non-blank line of a JSONL corpus.

  Raises IndexBuildError naming the file and the 1-based line of the first line that is
  not a JSON object with a string-or-integer `id` and string `title` and `text`.
  """
  try:
    f = open(path, encoding="utf-8")
  except OSError as e:
    raise IndexBuildError(f"cannot read corpus {path}: {e.strerror}") from None
  with f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        yield _parse_doc(line, f"{path}, line {lineno}")


def _parse_doc(line: str, where: str) -> dict[str, Any]:
  """One corpus line -> {"id", "title", "text"}; `where` prefixes the error message."""
  try:
    doc = json.loads(line)
  except json.JSONDecodeError as e:
    raise IndexBuildError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(doc, dict):
    raise IndexBuildError(f"{where}: expected a JSON object with id, title and text, "
                          f"got a JSON {type(doc).__name__}")
  missing = [key for key in ("id", "title", "text") if key not in doc]
  if missing:
    raise IndexBuildError(f"{where}: missing field(s) {missing}; "
                          "every line needs id, title and text")
  if isinstance(doc["id"], bool) or not isinstance(doc["id"], (str, int)):
    raise IndexBuildError(f"{where}: id must be a string or an integer, got {doc['id']!r}")
  for key in ("title", "text"):
    if not isinstance(doc[key], str):
      raise IndexBuildError(f"{where}: {key} must be a string, got {type(doc[key]).__name__}")
  return {"id": doc["id"], "title": doc["title"], "text": doc["text"]}


def _batches(docs: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
  """Consecutive lists of `size` docs (the last may be shorter), read lazily."""
  batch = []
  for doc in docs:
    batch.append(doc)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def build_index(corpus_path: str, out_dir: str, embedder: Embedder,
                batch_size: int = 256) -> dict[str, Any]:
  """Embeds a JSONL corpus into an index folder at `out_dir`; returns its meta.json content.

  The corpus is streamed `batch_size` documents at a time. Everything is written into a
  temporary sibling folder that is renamed to `out_dir` only when complete, so a failed
  build leaves no partial index; an existing index at `out_dir` is replaced, any other
  non-empty folder there is refused.
  """
  out_dir = os.path.abspath(out_dir)
  _check_replaceable(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  try:
    index = faiss.IndexFlatIP(embedder.dim)
    with open(os.path.join(tmp, DOCS_FILE), "w", encoding="utf-8") as docs_out:
      for batch in _batches(read_corpus(corpus_path), batch_size):
        index.add(np.ascontiguousarray(embedder.embed([doc_passage(d) for d in batch]), np.float32))
        docs_out.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in batch)
    if index.ntotal == 0:
      raise IndexBuildError(f"corpus {corpus_path} has no documents")
    faiss.write_index(index, os.path.join(tmp, INDEX_FILE))
    meta = {"format": FORMAT_VERSION, "embedder": embedder.spec(), "embedder_name": embedder.name,
            "count": int(index.ntotal), "dim": int(embedder.dim),
            "corpus": os.path.abspath(corpus_path)}
    with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=2)
    _swap_into_place(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def _check_replaceable(out_dir: str) -> None:
  """Raises IndexBuildError unless `out_dir` is absent, an empty folder or an index folder."""
  if not os.path.lexists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise IndexBuildError(f"output {out_dir} exists and is not a folder; choose another --out")
  if os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, META_FILE)):
    raise IndexBuildError(f"output folder {out_dir} is not empty and holds no index ({META_FILE}); "
                          "choose another --out or empty it")


def _swap_into_place(tmp: str, out_dir: str) -> None:
  """Renames the finished `tmp` folder to `out_dir`, replacing an old index there."""
  if not os.path.exists(out_dir):
    os.rename(tmp, out_dir)
    return
  old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
  os.rename(out_dir, os.path.join(old, "index"))
  os.rename(tmp, out_dir)
  shutil.rmtree(old, ignore_errors=True)


def load_index(index_dir: str, model_dir: str | None = None
               ) -> tuple[faiss.Index, list[dict[str, Any]], Embedder, dict[str, Any]]:
  """(index, docs, embedder, meta) of an index folder; ToolConfigError if missing or corrupt.

  `model_dir` replaces the encoder folder recorded in meta.json (for an `hf` index moved
  to another machine); the encoder must be the one the index was built with.
  """
  rebuild = "build it with: " + BUILD_COMMAND.format(out=index_dir)
  meta_path = os.path.join(index_dir, META_FILE)
  if not os.path.isfile(meta_path):
    raise ToolConfigError(f"local_search: index_dir {index_dir!r} holds no search index "
                          f"({META_FILE} not found); {rebuild}")
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    spec = dict(meta["embedder"])
    index = faiss.read_index(os.path.join(index_dir, INDEX_FILE))
    with open(os.path.join(index_dir, DOCS_FILE), encoding="utf-8") as f:
      docs = [json.loads(line) for line in f]
  except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
    raise ToolConfigError(f"local_search: index_dir {index_dir!r} is corrupt "
                          f"({type(e).__name__}: {e}); re{rebuild}") from None
  if not index.ntotal == len(docs) == meta.get("count"):
    raise ToolConfigError(f"local_search: index_dir {index_dir!r} is corrupt ({index.ntotal} "
                          f"vectors, {len(docs)} docs, meta count {meta.get('count')}); "
                          f"re{rebuild}")
  if model_dir is not None:
    if spec.get("type") != "hf":
      raise ToolConfigError(f"local_search: model_dir is only for an hf index; {index_dir!r} "
                            f"uses a {spec.get('type')!r} embedder")
    spec["model_dir"] = model_dir
  try:
    embedder = make_embedder(spec)
  except EmbedderError as e:
    raise ToolConfigError(f"local_search: cannot rebuild the embedder of {index_dir!r}: {e}"
                          ) from None
  if embedder.dim != index.d:
    raise ToolConfigError(f"local_search: embedder {embedder.name} gives {embedder.dim}-dim "
                          f"vectors but index {index_dir!r} holds {index.d}-dim ones; re{rebuild}")
  return index, docs, embedder, meta


def format_hits(hits: list[Hit], max_chars: int) -> str:
  """`[rank] (score s) Title` then the passage text cut to `max_chars`, blank line between."""
  blocks = []
  for rank, (score, doc) in enumerate(hits, start=1):
    text = doc["text"]
    if len(text) > max_chars:
      text = text[:max_chars].rstrip() + "..."
    blocks.append(f"[{rank}] (score {score:.2f}) {doc['title']}\n{text}")
  return "\n\n".join(blocks)


class LocalSearch(Tool):
  """Top-k passages of a prebuilt local index for a query; priced per query token."""

  name = "local_search"
  description = ("Search a local document collection. Returns the passages most relevant to "
                 "the query, best first, each with its similarity score and title.")
  parameters = {
      "type": "object",
      "properties": {
          "query": {"type": "string", "description": "what to look for, in natural language"},
          "top_k": {"type": "integer",
                    "description": f"how many passages to return (1-{MAX_TOP_K})"},
      },
      "required": ["query"],
      "additionalProperties": False,
  }

  def __init__(self, index_dir: str, top_k: int = 3, price_per_1m_tokens: float = 0.02,
               max_passage_chars: int = 800, model_dir: str | None = None):
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
      raise ToolConfigError(f"local_search: top_k must be an integer in 1..{MAX_TOP_K}, "
                            f"got {top_k!r}")
    if not isinstance(price_per_1m_tokens, (int, float)) or price_per_1m_tokens < 0:
      raise ToolConfigError("local_search: price_per_1m_tokens must be a number >= 0, "
                            f"got {price_per_1m_tokens!r}")
    if not isinstance(max_passage_chars, int) or max_passage_chars < 1:
      raise ToolConfigError("local_search: max_passage_chars must be a positive integer, "
                            f"got {max_passage_chars!r}")
    self.index_dir = index_dir
    self.top_k, self.price_per_1m_tokens = top_k, float(price_per_1m_tokens)
    self.max_passage_chars = max_passage_chars
    self._index, self._docs, self.embedder, self.meta = load_index(index_dir, model_dir)
    self._lock = threading.Lock()   # FAISS indexes are not safe under concurrent calls

  def search(self, query: str, top_k: int) -> list[Hit]:
    """The `top_k` best passages for `query`, by descending cosine similarity (blocking)."""
    vector = np.ascontiguousarray(self.embedder.embed([query]), np.float32)
    with self._lock:
      scores, ids = self._index.search(vector, top_k)
    return [Hit(float(s), self._docs[i]) for s, i in zip(scores[0], ids[0]) if i >= 0]

  def _search_and_count(self, query: str, top_k: int) -> tuple[list[Hit], int]:
    """`search` plus the query's token count, both blocking (an HF tokenizer may wait on a lock)."""
    return self.search(query, top_k), self.embedder.count_tokens(query)

  async def run(self, args: dict[str, Any]) -> ToolResult:
    """Embeds and searches in a worker thread; cost = query tokens * price / 1e6."""
    query = args["query"].strip()
    if not query:
      return ToolResult(text="Error: query is empty; write what to search for", error="empty query")
    top_k = min(max(args.get("top_k", self.top_k), 1), MAX_TOP_K)
    hits, tokens = await asyncio.to_thread(self._search_and_count, query, top_k)
    return ToolResult(text=format_hits(hits, self.max_passage_chars) or "No passages found.",
                      cost_usd=tokens * self.price_per_1m_tokens / 1e6,
                      usage={"query_tokens": tokens, "top_k": top_k})
