"""Reports: the Wilson interval by hand, summaries, markdown, and launch/compare.py."""

import json
import os
import subprocess
import sys

import pytest

from orchestra.eval.report import (comparison_markdown, comparison_rows, load_report, markdown,
                                   summarize, tool_call_distribution, wilson_interval,
                                   write_report)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wilson_interval_hand_computed():
  # k = 8, n = 10, z = 1.96: p = 0.8, z^2/n = 0.38416, denominator 1.38416,
  # centre = (0.8 + 0.19208) / 1.38416 = 0.71674,
  # half = 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.22658  ->  [0.49016, 0.94332]
  lo, hi = wilson_interval(8, 10)
  assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
  # k = 0: centre = half = (z^2/2n) / (1 + z^2/n) = 0.19208 / 1.38416 = 0.13877 -> [0, 0.27753]
  lo, hi = wilson_interval(0, 10)
  assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
  lo, hi = wilson_interval(10, 10)
  assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 0.27753, abs=1e-4)
  assert wilson_interval(0, 0) == (0.0, 1.0)
  lo, hi = wilson_interval(500, 1000)                # large n: close to p +- 1.96 sqrt(pq/n)
  assert (lo, hi) == pytest.approx((0.5 - 0.03099, 0.5 + 0.03099), abs=2e-4)


def record(i, correct, cost, latency, categories, calls=None, **extra):
  return {"id": str(i), "status": "done", "correct": correct, "cost_usd": cost,
          "latency_s": latency, "categories": categories, "tool_calls": calls or {},
          "turns": 2, "prediction": "x", "finish_reason": "answer", "judge_error": False,
          **extra}


RECORDS = [
    record(0, True, 0.01, 2.0, ["Math"], {"local_search": 2, "code_interpreter": 1}),
    record(1, False, 0.03, 4.0, ["Math"], {"local_search": 1}),
    record(2, True, 0.02, 6.0, ["Physics"], {}),
    record(3, False, 0.00, 0.0, ["Physics", "Math"], {}, status="error", prediction=None,
           finish_reason="engine_error"),
    record(4, False, 0.04, 8.0, ["Physics"], {"code_interpreter": 1}, judge_error=True,
           judge={"cost_usd": 0.001}),
]


def test_summary_metrics_and_breakdowns():
  s = summarize(RECORDS, {"benchmark": "hle", "label": "ours + tools", "data": "x"})
  assert (s["benchmark"], s["label"], s["setup"]) == ("hle", "ours + tools", {"data": "x"})
  assert (s["n"], s["n_correct"], s["accuracy"]) == (5, 2, 0.4)
  assert s["ci95"] == pytest.approx(list(wilson_interval(2, 5)))
  assert s["mean_cost_usd"] == pytest.approx(0.02) and s["total_cost_usd"] == pytest.approx(0.1)
  assert s["mean_latency_s"] == pytest.approx(4.0)
  assert (s["n_errors"], s["n_judge_errors"], s["n_answered"]) == (1, 1, 4)
  assert s["judge_cost_usd"] == pytest.approx(0.001)
  assert s["finish_reasons"] == {"answer": 4, "engine_error": 1}
  math_ = s["by_category"]["Math"]                      # a two-label item counts under both
  assert (math_["n"], math_["n_correct"]) == (3, 1)
  assert math_["mean_cost_usd"] == pytest.approx(0.04 / 3)
  assert list(s["by_category"]) == ["Math", "Physics"]
  assert s["tool_calls"] == tool_call_distribution(RECORDS)
  search = s["tool_calls"]["local_search"]
  assert search == {"total": 3, "per_item": 0.6, "share": 0.6, "items_using": 0.4}
  assert s["tool_calls"]["code_interpreter"]["share"] == pytest.approx(0.4)

  md = markdown(s)
  assert "## ours + tools on hle" in md
  assert "| 5 | 40.0 | 11.8–76.9 | 0.02000 | 0.1000 | 4.00 | 2.00 | 1 | 1 |" in md
  assert "| local_search | 3 | 0.60 | 60.0% | 40.0% |" in md
  assert "| Math | 3 | 33.3 |" in md
  tiny = markdown(summarize([record(0, True, 3.4e-7, 0.5, ["x"])], {"benchmark": "jsonl"}))
  assert "| 1 | 100.0 | 20.7–100.0 | 3.40e-07 | 3.40e-07 | 0.50 |" in tiny   # not 0.00000


def write_run(tmp_path, name, benchmark, label, records):
  run = tmp_path / name
  write_report(summarize(records, {"benchmark": benchmark, "label": label}), str(run))
  return run


@pytest.mark.slow
def test_comparison_table_and_compare_cli(tmp_path):
  cheap = [record(i, i % 2 == 0, 0.001, 30.0, ["x"]) for i in range(10)]    # 5 / 10
  dear = [record(i, i < 8, 0.05, 90.0, ["x"]) for i in range(10)]           # 8 / 10
  runs = [write_run(tmp_path, "a", "hle", "small + tools", cheap),
          write_run(tmp_path, "b", "frames", "small + tools", dear),
          write_run(tmp_path, "c", "hle", "gpt + tools", dear)]
  reports = [load_report(str(r)) for r in runs]
  rows = comparison_rows(reports)
  assert [r["label"] for r in rows] == ["small + tools", "gpt + tools"]
  assert rows[0]["mean_cost_usd"] == pytest.approx((0.001 + 0.05) / 2)
  table = comparison_markdown(reports)
  lines = table.splitlines()
  assert lines[0] == "| orchestrator | hle | frames | cost (¢/task) | latency (min/task) |"
  assert lines[2] == ("| small + tools | 50.0 [23.7, 76.3] (n=10) | 80.0 [49.0, 94.3] (n=10) "
                      "| 2.55 | 1.00 |")
  assert lines[3] == "| gpt + tools | 80.0 [49.0, 94.3] (n=10) | – | 5.00 | 1.50 |"
  with pytest.raises(ValueError, match="two runs of 'gpt \\+ tools' on hle"):
    comparison_rows(reports + [reports[2]])

  out = tmp_path / "cmp"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "compare.py"),
                         *map(str, runs), f"--out={out}"], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert (out / "comparison.md").read_text() == table and "| gpt + tools |" in proc.stdout
  png = (out / "accuracy_vs_cost.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  summary = json.loads((out / "comparison.json").read_text())
  assert summary[1]["benchmarks"]["hle"]["accuracy"] == 0.8

  bad = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "compare.py"),
                        str(runs[0]), str(tmp_path / "nope"), f"--out={out}"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and "nope: no report.json" in bad.stderr
  assert "Traceback" not in bad.stderr
