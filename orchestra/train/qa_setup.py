"""Training on question-answering files (`config.env.name = "qa"`): the paper's setting.

Tasks: the rows of `config.env.data` (split "train") and of `config.env.test_data`
(split "test"), read by `orchestra.envs.qa.load_benchmark` (`config.env.benchmark`:
hle | frames | gsm8k | jsonl). An episode is correct when its `answer` passes the
item's rule grader (exact match, numeric or multiple choice; orchestra/envs/qa_graders.py).

Tools: `config.tools.names`, each built from the config by `qa_tool_spec` (local_search
over `tools.index_dir`, web_search, code_interpreter, or an LLM expert of `tools.llm`:
an OpenAI-compatible endpoint with its prices), plus `answer`.

Prompt: as `launch/eval.py --benchmark` poses the item (`orchestra.envs.qa_prompts`),
with the preference instruction appended to the question.

There is no scripted teacher for open questions: a QA run starts from an instruct
checkpoint (`config.model.init_from`, whose tokenizer and chat template it uses) and goes
straight to RL (`config.sft.steps = 0`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_collections import ConfigDict

from orchestra.agent.episode import run_episode
from orchestra.agent.preferences import preference_instruction
from orchestra.engines import SamplingParams
from orchestra.envs.qa import QADataError, QAItem, load_benchmark
from orchestra.envs.qa_graders import grade
from orchestra.envs.qa_prompts import messages_for
from orchestra.models.config import DecoderConfig
from orchestra.tools import Tool, ToolConfigError, build_tool
from orchestra.train.setup_base import (ConfigValueError, Rollout, SetupBase, episode_config,
                                        model_config, run_tokenizer)


@dataclasses.dataclass
class QASetup(SetupBase):
  config: ConfigDict
  splits: dict[str, list[QAItem]]              # "train", and "test" when env.test_data is set
  tools: dict[str, Tool]                       # shared by every episode
  tokenizer: Any = None
  model_config: DecoderConfig | None = None

  def tasks(self, split: str) -> list[QAItem]:
    if split not in self.splits:
      raise ConfigValueError(f"split {split!r} needs config.env.test_data (a "
                             f"{self.config.env.benchmark} file of held-out questions)")
    return self.splits[split]

  def messages(self, item: QAItem, preference_name: str) -> list[dict[str, str]]:
    messages = messages_for(item, "checkpoint")
    instruction = preference_instruction(self.preference(preference_name), self.tool_names)
    messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n{instruction}"}
    return messages

  async def rollout(self, engine, item: QAItem, preference_name: str,
                    sampling: SamplingParams) -> Rollout:
    traj = await run_episode(engine, self.tokenizer, self.tools,
                             self.messages(item, preference_name), sampling,
                             episode_config(self.config))
    return Rollout(traj, grade(item.grader, traj.answer, item.answer, item.aliases).correct)


def qa_tool_spec(config: ConfigDict, name: str) -> dict[str, Any]:
  """The `build_tool` spec of tool `name` of `config.tools.names` on a QA run."""
  t = config.tools
  specs = {"local_search": {"type": "local_search", "index_dir": t.index_dir,
                            "top_k": t.search_top_k},
           "code_interpreter": {"type": "code_interpreter", "timeout_s": t.code_timeout_s},
           "web_search": {"type": "web_search"}}
  return specs.get(name) or {"type": "llm", "name": name, **t.llm[name].to_dict()}


def build_qa_setup(config: ConfigDict, workdir: str) -> QASetup:
  """Reads the question files, builds the tools, loads `init_from`'s tokenizer."""
  e = config.env
  if not config.model.init_from:
    raise ConfigValueError("config.env.name='qa' trains from an instruct checkpoint: set "
                           "config.model.init_from (CHECKPOINT_PATH) to a Hugging Face folder")
  splits = {}
  for split, path in (("train", e.data), ("test", e.test_data)):
    if split == "test" and not path:
      continue
    try:
      splits[split] = list(load_benchmark(e.benchmark, path).items)
    except (QADataError, FileNotFoundError) as err:
      field = "data" if split == "train" else "test_data"
      raise ConfigValueError(f"config.env.{field}={path!r}: {err}") from None
  if len(splits["train"]) < config.rl.tasks_per_step:
    raise ConfigValueError(f"config.env.data has {len(splits['train'])} questions, fewer than "
                           f"config.rl.tasks_per_step={config.rl.tasks_per_step}")
  tools = {"answer": build_tool({"type": "answer"})}
  for name in config.tools.names:
    try:
      tools[name] = build_tool(qa_tool_spec(config, name))
    except ToolConfigError as err:
      raise ConfigValueError(f"config.tools ({name}): {err}") from None
  setup = QASetup(config, splits, tools)
  setup.tokenizer = run_tokenizer(setup, os.path.join(workdir, "tokenizer"))
  setup.model_config = model_config(config, setup.tokenizer)
  return setup
