"""launch/eval.py on QA benchmarks: --dry_run on the real files, and a resumable run end to end.

The end-to-end test serves a tiny Qwen3 with launch/serve.py. It is fitted in the test (a few
SFT steps) to answer each benchmark question with one turn that calls local_search and
code_interpreter and submits "51", so a run exercises the real episode loop, both tools, the
grader and the report. The run (eval_stop_after.py) halts right after its third line in
results.jsonl and is SIGKILLed there; the rerun must run only the remaining ones.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_paths import BENCHMARKS, require_data
from serve_fixture import serve
from stop_point import kill_at

ROOT = Path(__file__).resolve().parents[2]
EVAL = str(ROOT / "launch" / "eval.py")
STOP_AFTER = str(Path(__file__).with_name("eval_stop_after.py"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def eval_py(*args, timeout=120):
  return subprocess.run([sys.executable, EVAL, *args], capture_output=True, text=True,
                        env=ENV, timeout=timeout)


def last_json_line(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def benchmarks():
  """The real benchmark files (not copied into the repository; CI has shared/ beside it)."""
  return require_data(BENCHMARKS, "benchmark files",
                      "the shared/ folder beside the repository")


@pytest.mark.slow
@pytest.mark.parametrize("benchmark, name, n_items, categories", [
    ("hle", "hle_500.json", 500, {"Math": 215, "Computer Science/AI": 63, "Physics": 50,
                                  "Humanities/Social Science": 50, "Other": 45,
                                  "Biology/Medicine": 43, "Engineering": 19, "Chemistry": 15}),
    ("frames", "frames.json", 824, None),
    ("gsm8k", "gsm8k_test.jsonl", 1319, {"gsm8k": 1319}),
    ("jsonl", "frames_qa.jsonl", 824, {"uncategorized": 824}),
])
def test_dry_run_on_the_real_files(benchmarks, benchmark, name, n_items, categories):
  proc = eval_py("--benchmark", benchmark, "--data", str(benchmarks / name), "--dry_run")
  assert proc.returncode == 0, proc.stderr
  summary = last_json_line(proc.stdout)
  assert summary["benchmark"] == benchmark
  assert (summary["n_items"], summary["n_skipped"]) == (n_items, 0)
  if categories is not None:
    assert summary["by_category"] == categories
  else:                                   # FRAMES: multi-label reasoning types
    assert set(summary["by_category"]) == {"Multiple constraints", "Numerical reasoning",
                                           "Temporal reasoning", "Tabular reasoning",
                                           "Post processing"}
    assert sum(summary["by_category"].values()) > n_items
  assert summary["orchestrator"] is None and summary["grader"] == "rules"


@pytest.mark.slow
def test_dry_run_limit_and_sample_on_real_gsm8k(benchmarks):
  proc = eval_py("--benchmark", "gsm8k", "--data", str(benchmarks / "gsm8k_test.jsonl"),
                 "--dry_run", "--sample", "25", "--seed", "3")
  assert proc.returncode == 0, proc.stderr
  assert last_json_line(proc.stdout)["n_items"] == 25


@pytest.mark.slow
def test_dry_run_names_the_first_bad_row(tmp_path):
  data = tmp_path / "qa.jsonl"
  data.write_text('{"question": "a?", "answer": "b"}\n\n{"question": "c?"}\n{"oops"\n')
  proc = eval_py("--benchmark", "jsonl", "--data", str(data), "--dry_run")
  assert proc.returncode != 0
  assert f"{data}, line 3: row 1: missing field 'answer'" in proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout

  array = tmp_path / "hle.json"
  array.write_text('[\n  {"id": 1, "question": "q", "answer": "A", "answer_type": "multipleChoice",'
                   ' "category": "Math"},\n  {"id": 2, "question": "q", "answer": "A",\n'
                   '   "answer_type": "freeform", "category": "Math"}\n]\n')
  proc = eval_py("--benchmark", "hle", "--data", str(array), "--dry_run")
  assert proc.returncode != 0 and f"{array}, line 3: row 1: field 'answer_type'" in proc.stderr


@pytest.mark.slow
def test_dry_run_counts_skipped_image_rows(tmp_path):
  rows = [{"id": "a", "question": "q1", "answer": "1", "answer_type": "exactMatch",
           "category": "Math", "image": ""},
          {"id": "b", "question": "q2", "answer": "B", "answer_type": "multipleChoice",
           "category": "Biology/Medicine", "image": "data:image/jpeg;base64,/9j/4AAQ"}]
  data = tmp_path / "hle.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = last_json_line(eval_py("--benchmark", "hle", "--data", str(data), "--dry_run").stdout)
  assert (summary["n_items"], summary["n_skipped"], summary["skipped"]) == (1, 1, {"image": 1})
  assert summary["by_category"] == {"Math": 1}
  proc = eval_py("--benchmark", "hle", "--data", str(data), "--dry_run", "--notext_only")
  assert last_json_line(proc.stdout)["n_skipped"] == 0


def test_noresume_moves_the_old_run_aside(tmp_path):
  from orchestra.eval.qa_cli import _fresh_start
  (tmp_path / "results.jsonl").write_text('{"id": "q0"}\n')
  (tmp_path / "run.json").write_text("{}")
  (tmp_path / "report.md").write_text("old")
  _fresh_start(str(tmp_path))
  names = sorted(p.name for p in tmp_path.iterdir())
  assert "results.jsonl" not in names and "run.json" not in names and "report.md" in names
  assert any(n.startswith("results.jsonl.old-") for n in names)
  assert any(n.startswith("run.json.old-") for n in names)


@pytest.mark.slow
def test_user_errors_are_one_clear_message(tmp_path):
  data = tmp_path / "qa.jsonl"
  data.write_text('{"question": "a?", "answer": "b"}\n')
  cases = [
      (["--data", str(tmp_path / "missing.jsonl"), "--dry_run"], "missing.jsonl: no such file"),
      (["--data", str(data)], "needs --base_url and --model"),
      (["--data", str(data), "--dry_run", "--tools", "local_search"], "needs --index_dir"),
      (["--data", str(data), "--dry_run", "--limit", "2", "--sample", "2"], "not both"),
      (["--data", str(data), "--dry_run", "--orchestrator", "chat", "--base_url",
        "http://127.0.0.1:1/v1", "--model", "m", "--api_key_env", "QA_TEST_UNSET_KEY"],
       "QA_TEST_UNSET_KEY"),
      (["--data", str(data), "--dry_run", "--judge_base_url", "https://api.openai.com/v1",
        "--judge_model", "gpt-5-mini", "--judge_api_key_env", "QA_TEST_UNSET_KEY"],
       "--judge_api_key_env: environment variable QA_TEST_UNSET_KEY"),
      (["--data", str(data), "--dry_run", "--judge_model", "gpt-5-mini"],
       "needs both --judge_base_url and --judge_model"),
      (["--data", str(data), "--orchestrator", "chat", "--base_url", "http://127.0.0.1:1/v1",
        "--model", "m", "--out", str(tmp_path / "run")], "is unreachable"),
  ]
  for args, message in cases:
    proc = eval_py("--benchmark", "jsonl", *args)
    assert proc.returncode != 0, (args, proc.stdout)
    assert message in proc.stderr, (args, proc.stderr)
    assert "Traceback" not in proc.stderr, (args, proc.stderr)


# ----------------------------------------------------------------------------- end to end

QUESTIONS = [("What is 17 times 3?", "51", "arithmetic"),
             ("What is 3 times 17?", "51", "arithmetic"),
             ("What is 51 times 1?", "51", "arithmetic"),
             ("What is 2 times 9?", "18", "arithmetic"),
             ("What is the capital of Veloria?", "Trundle", "geography"),
             ("What is 50 plus 1?", "51", "arithmetic"), ("What is 6 times 7?", "42", "arithmetic"),
             ("What is 102 divided by 2?", "51", "arithmetic")]
CORPUS = [{"id": 1, "title": "Veloria", "text": "The capital of Veloria is Trundle."},
          {"id": 2, "title": "Multiplication", "text": "17 times 3 is 51."},
          {"id": 3, "title": "Zorblax", "text": "Zorblax Industries makes lamps."}]
CALLS = [("local_search", {"query": "Veloria"}), ("code_interpreter", {"code": "print(17 * 3)"}),
         ("answer", {"answer": "51"})]


def fit_policy(prompts, target, tokenizer, steps=40):
  """A tiny Qwen3 fitted to reply `target` to every prompt (SFT: policy loss, advantage 1)."""
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from orchestra.models import CausalLM, DecoderConfig
  from orchestra.models.decoding import generate
  from orchestra.rl.update import (Learner, OptimizerConfig, PolicyLossConfig, make_optimizer,
                                   policy_loss_fn)
  prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
  target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
  length = max(map(len, prompt_ids)) + len(target_ids)
  tokens = np.zeros((len(prompts), length), np.int32)
  attention, loss = np.zeros(tokens.shape, bool), np.zeros(tokens.shape, bool)
  for i, p in enumerate(prompt_ids):
    tokens[i, :len(p) + len(target_ids)] = p + target_ids
    attention[i, :len(p) + len(target_ids)] = True
    loss[i, len(p):len(p) + len(target_ids)] = True
  batch = {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(attention),
           "loss_mask": jnp.asarray(loss), "advantages": jnp.ones(tokens.shape),
           "behaviour_logp": jnp.zeros(tokens.shape)}
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True)
  learner = Learner(CausalLM(cfg, rngs=nnx.Rngs(0)),
                    make_optimizer(OptimizerConfig(learning_rate=3e-3)),
                    policy_loss_fn(PolicyLossConfig()))
  for _ in range(steps):
    learner.update(batch)
  for p in prompt_ids:
    out, _ = generate(learner.model, [p], max_new_tokens=len(target_ids))
    assert np.asarray(out)[0].tolist() == target_ids, "SFT did not fit the tool calls"
  return learner.model, len(target_ids)


@pytest.fixture(scope="module")
def served_policy(tmp_path_factory):
  from orchestra.agent.chat_format import IM_END, render_prompt, tool_call_text
  from orchestra.agent.tokenizer import train_tokenizer
  from orchestra.envs.qa import load_jsonl
  from orchestra.envs.qa_prompts import messages_for
  from orchestra.eval.qa_tools import build_tools, simple_tool_specs
  from orchestra.checkpoint import save_hf
  from orchestra.tools.embedders import make_embedder
  from orchestra.tools.local_search import build_index

  root = tmp_path_factory.mktemp("qa_e2e")
  data = root / "bench.jsonl"
  data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a, "category": c})
                          + "\n" for i, (q, a, c) in enumerate(QUESTIONS)))
  corpus = root / "corpus.jsonl"
  corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
  build_index(str(corpus), str(root / "index"), make_embedder({"type": "hashing", "dim": 64}))

  # The prompts exactly as the evaluator renders them (same tools, same order).
  tools = build_tools(simple_tool_specs(["local_search", "code_interpreter"],
                                        str(root / "index")))
  schemas = [tool.schema() for tool in tools.values()]
  prompts = [render_prompt(messages_for(item, "checkpoint"), schemas)
             for item in load_jsonl(str(data)).items]
  target = "".join(tool_call_text(name, args) for name, args in CALLS) + IM_END
  # Merges may cross word boundaries, so the fixed system prompt becomes a few tokens.
  tokenizer = train_tokenizer(prompts * 5 + [target] * 5, 1500, split_words=False)
  model, target_len = fit_policy(prompts, target, tokenizer)
  tokenizer.save_pretrained(root / "tok")
  model_dir = save_hf(model, root / "policy", tokenizer_dir=str(root / "tok"))

  with serve(model_dir) as (url, _):     # read-only for the tests: each writes under tmp_path
    yield {"url": url, "model_dir": model_dir, "data": data, "index": root / "index",
           "max_tokens": target_len + 8}


def run_args(policy, out):
  return ["--benchmark", "jsonl", "--data", str(policy["data"]), "--orchestrator", "checkpoint",
          "--base_url", policy["url"] + "/v1", "--model", "policy",
          "--tokenizer", str(policy["model_dir"]), "--tools", "local_search,code_interpreter",
          "--index_dir", str(policy["index"]), "--temperature", "0", "--max_turns", "2",
          "--max_tokens", str(policy["max_tokens"]), "--concurrency", "1", "--out", str(out)]


def complete_lines(path):
  if not path.exists():
    return []
  return [line for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


@pytest.mark.slow
def test_dry_run_validates_endpoint_settings_without_calling_them(served_policy, tmp_path):
  args = run_args(served_policy, tmp_path / "dry")
  args[args.index("--base_url") + 1] = "http://127.0.0.1:1/v1"      # nothing listens there
  proc = eval_py(*args, "--dry_run")
  assert proc.returncode == 0, proc.stderr
  summary = last_json_line(proc.stdout)
  assert summary["n_items"] == 8 and summary["by_category"] == {"arithmetic": 7, "geography": 1}
  assert summary["tools"] == ["answer", "code_interpreter", "local_search"]
  assert summary["orchestrator"] == {"kind": "checkpoint", "model": "policy"}
  assert not (tmp_path / "dry" / "results.jsonl").exists()


@pytest.mark.slow
def test_run_killed_halfway_resumes_only_the_remaining_items(served_policy, tmp_path):
  out = tmp_path / "run"
  results = out / "results.jsonl"
  # The run halts right after its 3rd result line and waits to be killed: no timing guess.
  output = kill_at([sys.executable, STOP_AFTER, "3", *run_args(served_policy, out)],
                   "STOPPED AFTER 3 RESULTS", env=ENV)
  done_before = {json.loads(line)["id"] for line in complete_lines(results)}
  assert len(done_before) == 3, output
  assert not (out / "report.json").exists()

  proc = eval_py(*run_args(served_policy, out), timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  n_left = len(QUESTIONS) - len(done_before)
  assert f"ran {n_left} items, {len(done_before)} already done (resumed)" in proc.stdout
  records = [json.loads(line) for line in complete_lines(results)]
  assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(len(QUESTIONS))]

  report = json.loads((out / "report.json").read_text())
  n_51 = sum(a == "51" for _, a, _ in QUESTIONS)
  assert (report["n"], report["n_correct"], report["n_errors"]) == (8, n_51, 0)
  assert report["n_resumed"] == len(done_before) and report["n_ran"] == n_left
  assert {name: d["total"] for name, d in report["tool_calls"].items()} == {
      "local_search": 8, "code_interpreter": 8, "answer": 8}
  assert report["by_category"]["geography"]["n_correct"] == 0
  assert report["finish_reasons"] == {"answer": 8}
  for r in records:
    assert r["prediction"] == "51" and r["turns"] == 1 and r["status"] == "done"
    assert r["cost_usd"] > 0 and r["latency_s"] > 0        # search per token, code per second
  assert "| local_search | 8 | 1.00 | 33.3% | 100.0% |" in (out / "report.md").read_text()
  assert json.loads((out / "run.json").read_text())["tools"] == [
      "answer", "code_interpreter", "local_search"]


@pytest.mark.slow
def test_chat_orchestrator_through_the_servers_chat_route(served_policy, tmp_path):
  """--orchestrator chat: the same model prompted over /v1/chat/completions with `tools`."""
  out = tmp_path / "chat"
  args = run_args(served_policy, out)
  args[args.index("checkpoint")] = "chat"
  proc = eval_py(*args, "--limit", "3", "--price_in", "100", "--price_out", "1000",
                 "--label", "tiny chat")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "ran 3 items, 0 already done" in proc.stdout
  report = json.loads((out / "report.json").read_text())
  assert (report["label"], report["n"], report["n_correct"]) == ("tiny chat", 3, 3)
  assert {name: d["total"] for name, d in report["tool_calls"].items()} == {
      "local_search": 3, "code_interpreter": 3, "answer": 3}
  records = [json.loads(line) for line in complete_lines(out / "results.jsonl")]
  for r in records:
    # The orchestrator's own tokens at 100 / 1000 USD per 1M dominate the tools' cost.
    assert r["cost_usd"] > 100 * 40 / 1e6 and r["finish_reason"] == "answer"

  # Regrade the stored answers with an LLM judge: the tiny model is no judge, so every
  # verdict is a judge error, and none counts as correct.
  proc = eval_py(*args, "--limit", "3", "--label", "tiny chat", "--regrade",
                 "--judge_base_url", served_policy["url"] + "/v1", "--judge_model", "policy",
                 "--judge_max_tokens", "8")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads((out / "report.json").read_text())
  assert (report["n"], report["n_correct"], report["n_judge_errors"]) == (3, 0, 3)
  assert report["setup"]["grader"] == "judge:policy"
  records = [json.loads(line) for line in complete_lines(out / "results.jsonl")]
  assert all(r["rule_grade"]["correct"] and r["judge"]["correct"] is None for r in records)
  assert len(list((out / "judge_cache").rglob("*.json"))) == 3
