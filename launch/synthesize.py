"""Synthesise tau2-format domains and verified tasks (ToolScale-style).

  python launch/synthesize.py --config configs/synth_offline.py --out data/synth
  python launch/synthesize.py --config configs/synth_llm.py --out data/synth_llm \
      --config.llm.url=http://host:8000/v1 --config.llm.model=NAME

A rerun with the same --out resumes: finished stages are read back, not redone. Train on
the result with configs/tau2_synth_cpu.py (--config.env.data=<out>).
"""

from absl import app, flags
from ml_collections import config_flags

from orchestra.synth.drafts import SynthDrop
from orchestra.synth.run import SynthConfigError, format_report, run_synthesis

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/synth_*.py file")
_OUT = flags.DEFINE_string("out", "data/synth", "output folder (domains/, work/, report.json)")


def main(argv):
  del argv
  try:
    report = run_synthesis(_CONFIG.value, _OUT.value)
  except SynthConfigError as e:
    raise app.UsageError(str(e)) from None
  except SynthDrop as e:                 # no domain at all (e.g. the endpoint is down)
    raise SystemExit(f"synthesis stopped before any domain: {e}") from None
  print(format_report(report))
  print(f"wrote {_OUT.value}/domains/ and {_OUT.value}/report.json")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
