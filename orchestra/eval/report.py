"""Benchmark reports: accuracy with a 95% interval, cost, latency, tool calls, categories.

`summarize(records, setup)` turns the per-item records of `orchestra.eval.qa_records` into one
report dict (written as report.json and report.md); `comparison_markdown` and
`plot_accuracy_vs_cost` put several reports side by side, paper style (one row per
orchestrator, one column per benchmark, cost in US cents and latency in minutes per task,
averaged over that orchestrator's benchmarks, as in ToolOrchestra's Table 1).

The keys a report needs for comparison (so other runners, e.g. tau2, can produce one):
`benchmark`, `label`, `n`, `accuracy`, `ci95`, `mean_cost_usd`, `mean_latency_s`.
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054                  # standard normal quantile at 0.975
BENCHMARK_ORDER = ("hle", "frames", "tau2", "gsm8k", "jsonl")
REPORT_JSON, REPORT_MD = "report.json", "report.md"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion p̂ = k / n:

      centre = (p̂ + z²/(2n)) / (1 + z²/n)
      half   = z · sqrt(p̂(1 - p̂)/n + z²/(4n²)) / (1 + z²/n)
      [centre - half, centre + half]

  It stays inside [0, 1] and is sensible at p̂ = 0 or 1 and small n (unlike p̂ ± z·se).
  n = 0 gives (0, 1).
  """
  if n <= 0:
    return 0.0, 1.0
  p = k / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: Sequence[float]) -> float:
  return float(sum(values) / len(values)) if values else 0.0


def _accuracy_block(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  n = len(records)
  k = sum(bool(r.get("correct")) for r in records)
  lo, hi = wilson_interval(k, n)
  return {"n": n, "n_correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi],
          "mean_cost_usd": _mean([r.get("cost_usd", 0.0) for r in records]),
          "mean_latency_s": _mean([r.get("latency_s", 0.0) for r in records])}


def tool_call_distribution(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Per tool: total calls, mean calls per item, share of all calls, share of items using it."""
  totals, used = collections.Counter(), collections.Counter()
  for r in records:
    for name, count in (r.get("tool_calls") or {}).items():
      totals[name] += count
      used[name] += count > 0
  n, all_calls = len(records), sum(totals.values())
  return {name: {"total": int(totals[name]), "per_item": totals[name] / n if n else 0.0,
                 "share": totals[name] / all_calls if all_calls else 0.0,
                 "items_using": used[name] / n if n else 0.0}
          for name in sorted(totals, key=lambda t: (-totals[t], t))}


def summarize(records: Sequence[dict[str, Any]], setup: dict[str, Any] | None = None
              ) -> dict[str, Any]:
  """The report of one run: `setup` (benchmark, label, orchestrator, ...) plus the metrics."""
  setup = dict(setup or {})
  summary = {"benchmark": setup.pop("benchmark", ""), "label": setup.pop("label", ""),
             **_accuracy_block(records)}
  summary.update({
      "ci_method": "wilson",
      "total_cost_usd": float(sum(r.get("cost_usd", 0.0) for r in records)),
      "total_latency_s": float(sum(r.get("latency_s", 0.0) for r in records)),
      "mean_turns": _mean([r.get("turns", 0) for r in records]),
      "n_errors": sum(r.get("status") == "error" for r in records),
      "n_judge_errors": sum(bool(r.get("judge_error")) for r in records),
      "n_answered": sum(r.get("prediction") not in (None, "") for r in records),
      "judge_cost_usd": float(sum((r.get("judge") or {}).get("cost_usd", 0.0) or 0.0
                                  for r in records)),
      "finish_reasons": dict(collections.Counter(r.get("finish_reason", "") for r in records)),
      "tool_calls": tool_call_distribution(records),
  })
  groups = collections.defaultdict(list)
  for r in records:
    for category in r.get("categories") or ["uncategorized"]:
      groups[category].append(r)
  summary["by_category"] = {c: _accuracy_block(groups[c])
                            for c in sorted(groups, key=lambda c: (-len(groups[c]), c))}
  summary["setup"] = setup
  return summary


def _pct(x: float) -> str:
  return f"{100 * x:.1f}"


def _usd(x: float, digits: int) -> str:
  """`digits` decimals, or 3 significant digits in e-notation for amounts too small to show."""
  return f"{x:.{digits}f}" if x == 0 or abs(x) >= 10 ** -(digits - 1) else f"{x:.2e}"


def markdown(summary: dict[str, Any]) -> str:
  """report.md: headline metrics, tool-call distribution, per-category breakdown."""
  s = summary
  lo, hi = s["ci95"]
  lines = [f"## {s['label'] or 'run'} on {s['benchmark']}", "",
           "| n | accuracy (%) | 95% CI (Wilson) | mean cost ($) | total cost ($) | "
           "mean latency (s) | mean turns | errors | judge errors |",
           "|---|---|---|---|---|---|---|---|---|",
           f"| {s['n']} | {_pct(s['accuracy'])} | {_pct(lo)}–{_pct(hi)} | "
           f"{_usd(s['mean_cost_usd'], 5)} | {_usd(s['total_cost_usd'], 4)} | "
           f"{s['mean_latency_s']:.2f} | "
           f"{s['mean_turns']:.2f} | {s['n_errors']} | {s['n_judge_errors']} |", ""]
  if s["tool_calls"]:
    lines += ["| tool | calls | per item | share of calls | items using it |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {d['total']} | {d['per_item']:.2f} | {_pct(d['share'])}% | "
              f"{_pct(d['items_using'])}% |" for name, d in s["tool_calls"].items()]
    lines.append("")
  lines += ["| category | n | accuracy (%) | 95% CI | mean cost ($) | mean latency (s) |",
            "|---|---|---|---|---|---|"]
  for name, c in s["by_category"].items():
    clo, chi = c["ci95"]
    lines.append(f"| {name} | {c['n']} | {_pct(c['accuracy'])} | {_pct(clo)}–{_pct(chi)} | "
                 f"{_usd(c['mean_cost_usd'], 5)} | {c['mean_latency_s']:.2f} |")
  return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], out_dir: str) -> dict[str, str]:
  """Writes report.json and report.md into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, REPORT_JSON), "md": os.path.join(out_dir, REPORT_MD)}
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)
  with open(paths["md"], "w", encoding="utf-8") as f:
    f.write(markdown(summary))
  return paths


def load_report(run_dir: str) -> dict[str, Any]:
  """A run folder's report.json (ValueError naming the folder if it has none)."""
  path = os.path.join(run_dir, REPORT_JSON)
  try:
    with open(path, encoding="utf-8") as f:
      report = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{run_dir}: no {REPORT_JSON}; finish the run with launch/eval.py and the "
                     "same --out first") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
  missing = [k for k in ("benchmark", "label", "n", "accuracy", "ci95", "mean_cost_usd",
                         "mean_latency_s") if k not in report]
  if missing:
    raise ValueError(f"{path}: missing {missing}; not a benchmark report")
  return report


def _benchmarks(reports: Sequence[dict[str, Any]]) -> list[str]:
  names = list(dict.fromkeys(r["benchmark"] for r in reports))
  return sorted(names, key=lambda b: (BENCHMARK_ORDER.index(b) if b in BENCHMARK_ORDER
                                      else len(BENCHMARK_ORDER), names.index(b)))


def comparison_rows(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per label: its report per benchmark, and cost/latency averaged over them."""
  rows: dict[str, dict[str, Any]] = {}
  for r in reports:
    row = rows.setdefault(r["label"], {"label": r["label"], "runs": {}})
    if r["benchmark"] in row["runs"]:
      raise ValueError(f"two runs of {r['label']!r} on {r['benchmark']}; give them different "
                       "labels (--labels)")
    row["runs"][r["benchmark"]] = r
  for row in rows.values():
    runs = list(row["runs"].values())
    row["mean_cost_usd"] = _mean([r["mean_cost_usd"] for r in runs])
    row["mean_latency_s"] = _mean([r["mean_latency_s"] for r in runs])
  return list(rows.values())


def comparison_markdown(reports: Sequence[dict[str, Any]]) -> str:
  """Paper-style table: accuracy % [95% CI] per benchmark, cost (¢) and latency (min) per task."""
  benchmarks = _benchmarks(reports)
  lines = ["| orchestrator | " + " | ".join(benchmarks)
           + " | cost (¢/task) | latency (min/task) |",
           "|---" * (len(benchmarks) + 3) + "|"]
  for row in comparison_rows(reports):
    cells = []
    for b in benchmarks:
      r = row["runs"].get(b)
      cells.append("–" if r is None else
                   f"{_pct(r['accuracy'])} [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] "
                   f"(n={r['n']})")
    lines.append(f"| {row['label']} | " + " | ".join(cells) +
                 f" | {100 * row['mean_cost_usd']:.2f} | {row['mean_latency_s'] / 60:.2f} |")
  return "\n".join(lines) + "\n"


def plot_accuracy_vs_cost(reports: Sequence[dict[str, Any]], path: str) -> str:
  """Accuracy (with 95% CI bars) against mean cost per task: colour = label, marker = benchmark.

  The cost axis is logarithmic when every run has a positive cost (runs of a free local model
  are drawn at the left edge then), linear otherwise. Two legends beside the axes name the
  colours and the markers, so coinciding points stay readable.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = list(dict.fromkeys(r["label"] for r in reports))
  colours = dict(zip(labels, plt.cm.tab10.colors * (len(labels) // 10 + 1)))
  markers = dict(zip(_benchmarks(reports), "osD^vP*Xph" * 2))
  costs = [r["mean_cost_usd"] for r in reports]
  positive = [c for c in costs if c > 0]
  log_x = bool(positive) and len(positive) * 2 > len(costs)
  floor = min(positive) / 3 if positive else 0.0
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for r in reports:
    x, y = (max(r["mean_cost_usd"], floor) if log_x else r["mean_cost_usd"]), 100 * r["accuracy"]
    lo, hi = (100 * v for v in r["ci95"])
    ax.errorbar(x, y, yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]],
                fmt=markers.get(r["benchmark"], "o"), color=colours[r["label"]],
                ecolor=colours[r["label"]], elinewidth=1.2, capsize=3, markersize=8,
                markeredgecolor="black", markeredgewidth=0.5, alpha=0.9)
  if log_x:
    ax.set_xscale("log")
    ax.set_xlim(min(positive) / 4 if floor else None, max(positive) * 3)
    ax.set_xlabel("mean cost per task (USD, log scale)")
  else:
    ax.set_xlabel("mean cost per task (USD)")
  ax.set_ylabel("accuracy (%, 95% Wilson interval)")
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  label_handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[lab],
                              markeredgecolor="black", markeredgewidth=0.5, label=lab)
                   for lab in labels]
  bench_handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=b)
                   for b, m in markers.items()]
  first = ax.legend(handles=label_handles, title="orchestrator", fontsize=8,
                    loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  ax.add_artist(first)
  second = ax.legend(handles=bench_handles, title="benchmark", fontsize=8, loc="lower left",
                     bbox_to_anchor=(1.02, 0.0), borderaxespad=0)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight", bbox_extra_artists=[first, second])
  plt.close(fig)
  return path
