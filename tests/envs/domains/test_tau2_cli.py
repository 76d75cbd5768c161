"""launch/eval.py --benchmark tau2: gold replay lines, and a conversational run end to end
against launch/serve.py hosting a tiny random model as both the agent and the user simulator."""

import json
import os
import subprocess
import sys

import pytest
from serve_fixture import serve

pytestmark = pytest.mark.slow     # every test here starts launch/eval.py

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
EVAL = os.path.join(REPO, "launch", "eval.py")
SUBSET = ["0", "21", "64"]


def small_data(tau2_data, tmp_path, task_ids, policy=None):
  """A tau2 data folder with retail's db.json (linked) and a subset of its tasks."""
  root = tmp_path / "tau2"
  folder = root / "domains" / "retail"
  folder.mkdir(parents=True)
  src = tau2_data / "domains" / "retail"
  (folder / "db.json").symlink_to(src / "db.json")
  (folder / "policy.md").write_text(policy or (src / "policy.md").read_text())
  tasks = [t for t in json.loads((src / "tasks.json").read_text()) if t["id"] in task_ids]
  (folder / "tasks.json").write_text(json.dumps(tasks))
  (root / "user_simulator").symlink_to(tau2_data / "user_simulator")
  return root


def run_eval(args, timeout=120):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  return subprocess.run([sys.executable, EVAL, "--benchmark", "tau2", *args], env=env,
                        capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_replay_gold_cli_writes_one_line_per_task(tau2_data, tmp_path, domains, gold_replays):
  data = small_data(tau2_data, tmp_path, SUBSET)
  out = tmp_path / "gold.jsonl"
  proc = run_eval(["--domain", "retail", "--data", str(data), "--replay_gold",
                   "--out", str(out)])
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["task_id"] for r in lines] == SUBSET  # tasks.json order
  index = {t.id: i for i, t in enumerate(domains["retail"].tasks)}
  for row in lines:
    assert set(row) == {"task_id", "initial_db_hash", "final_db_hash", "actions"}
    assert all(set(a) == {"name", "arguments", "output", "error"} for a in row["actions"])
    assert row == gold_replays["retail"][index[row["task_id"]]]
  assert any(a["error"] for a in lines[2]["actions"])  # task 64's exchange raises
  assert "replayed 3 retail tasks (1 gold actions raised)" in proc.stdout


def test_cli_errors_are_one_clear_line(tau2_data, tmp_path):
  proc = run_eval(["--domain", "retail", "--data", str(tmp_path), "--replay_gold",
                   "--out", str(tmp_path / "x.jsonl")])
  assert proc.returncode != 0 and "tau2 domain folder not found" in proc.stderr
  proc = run_eval(["--domain", "retail", "--data", str(tau2_data), "--replay_gold"])
  assert proc.returncode != 0 and "--replay_gold needs --out FILE" in proc.stderr
  proc = run_eval(["--domain", "retail", "--data", str(tau2_data), "--split", "nope",
                   "--dry_run"])
  assert proc.returncode != 0 and "has splits ['base', 'test', 'train']" in proc.stderr
  proc = run_eval(["--domain", "retail", "--data", str(tau2_data)])
  assert proc.returncode != 0 and "--agent_url and --agent_model are required" in proc.stderr


# ----------------------------------------------------------------- end to end with a server

def tiny_chat_model(root, tau2_data):
  """A tiny random Qwen3 with a tokenizer trained on the domain's prompts (short contexts)."""
  from flax import nnx
  from tokenizer_fixture import CORPUS

  from orchestra.agent.tokenizer import train_tokenizer
  from orchestra.envs.domains import load_domain
  from orchestra.envs.domains.conversation import (agent_system_prompt, load_user_guidelines,
                                                   user_system_prompt)
  from orchestra.checkpoint import save_hf
  from orchestra.models import CausalLM, DecoderConfig
  domain = load_domain("retail", tau2_data)
  guidelines = load_user_guidelines(tau2_data)
  corpus = (CORPUS * 5 + [json.dumps(domain.tool_schemas())] * 3
            + [agent_system_prompt(domain.policy),
               user_system_prompt(guidelines, domain.task("33"))] * 3)
  tokenizer = train_tokenizer(corpus, 3000, split_words=False)
  cfg = DecoderConfig("qwen3", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True)
  tokenizer.save_pretrained(root / "tok")
  return save_hf(CausalLM(cfg, rngs=nnx.Rngs(0)), root / "tiny-tau2",
                 tokenizer_dir=str(root / "tok"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tau2_data):
  root = tmp_path_factory.mktemp("tau2serve")
  model_dir = tiny_chat_model(root, tau2_data)
  with serve(model_dir, "--max_model_len=4096", "--max_batch_size=4") as (url, _):
    yield {"url": url + "/v1", "model": "tiny-tau2"}


def test_conversational_run_end_to_end_against_serve(server, tau2_data, tmp_path):
  out = tmp_path / "run.jsonl"
  proc = run_eval(["--domain", "retail", "--data", str(tau2_data), "--task_ids", "33",
                   "--num_trials", "2", "--max_steps", "6", "--agent_url", server["url"],
                   "--agent_model", server["model"], "--agent_max_tokens", "8",
                   "--user_max_tokens", "8", "--agent_price_in", "2.0",
                   "--agent_price_out", "10.0", "--user_price_in", "1.0",
                   "--expert_url", server["url"], "--expert_model", server["model"],
                   "--out", str(out)], timeout=240)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["task_id"], r["trial"]) for r in rows] == [("33", 0), ("33", 1)]
  for r in rows:
    # nonsense content, but the loop must end by one of its rules and be accounted for
    assert r["termination"] in ("user_stop", "agent_stop", "max_steps", "too_many_errors")
    assert r["steps"] <= 6 and r["messages"][0]["content"] == "Hi! How can I help you today?"
    roles = [m["role"] for m in r["messages"]]
    assert roles[:3] == ["assistant", "user", "assistant"]
    assert r["agent_prompt_tokens"] > 500 and 0 < r["agent_completion_tokens"] <= 8 * 3
    assert r["agent_cost_usd"] == pytest.approx(
        (2.0 * r["agent_prompt_tokens"] + 10.0 * r["agent_completion_tokens"]) / 1e6)
    assert r["user_cost_usd"] > 0 and r["agent_latency_s"] > 0 and r["latency_s"] > 0
    assert r["cost_usd"] == pytest.approx(r["agent_cost_usd"] + r["expert_cost_usd"])
    assert r["final_db_hash"] and set(r["breakdown"]) == {"DB"}
    if r["termination"] in ("max_steps", "too_many_errors"):
      assert r["reward"] == 0.0
  summary = json.loads((tmp_path / "run.jsonl.summary.json").read_text())
  assert summary["num_tasks"] == 1 and summary["num_episodes"] == 2
  assert set(summary["pass_hat_k"]) == {"1", "2"}
  assert summary["success_rate"] == sum(r["reward"] == 1.0 for r in rows) / 2
  assert summary["avg_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows) / 2)
  assert sum(summary["terminations"].values()) == 2
  assert '"pass_hat_k"' in proc.stdout
