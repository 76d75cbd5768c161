"""LLM judge: verdict parsing on varied replies, the disk cache, endpoint failures and cost."""

import asyncio
import json
import os

import httpx
import pytest

from orchestra.eval.judge import (JUDGE_TEMPLATE, ChatEndpoint, Judge, JudgeConfigError,
                                  parse_verdict, qa_messages)


@pytest.mark.parametrize("reply, correct, extracted", [
    ('{"extracted_final_answer": "Paris", "reasoning": "same city", "correct": "yes"}',
     True, "Paris"),
    ('{"extracted_final_answer": "Lyon", "reasoning": "other city", "correct": "no"}',
     False, "Lyon"),
    ('Sure! Here is my verdict:\n```json\n{"extracted_final_answer": "51", "correct": true}\n```',
     True, "51"),
    ('<think>The response says 51; reference 51. {"correct": "no"}</think>\n'
     '{"extracted_final_answer": "51", "correct": "Yes."}', True, "51"),
    ('{"extracted_answer": "none", "correct": false}', False, "none"),
    ('{"correct": 1}', True, None),
    # HLE's own judge format: key: value lines
    ("extracted_final_answer: 11520\n\nreasoning: matches exactly\n\ncorrect: yes\n\n"
     "confidence: 95%", True, "11520"),
    ("**extracted_final_answer:** B\n**correct:** no", False, "B"),
])
def test_parse_verdict_accepts_clear_verdicts(reply, correct, extracted):
  verdict = parse_verdict(reply)
  assert verdict.correct is correct and not verdict.judge_error
  assert verdict.extracted_answer == extracted and verdict.error is None


@pytest.mark.parametrize("reply, why", [
    ("", "empty judge reply"),
    ("<think>hmm</think>   ", "empty judge reply"),
    ("The response is correct.", "no verdict"),
    ('{"extracted_final_answer": "Paris", "correct": "maybe"}', "'correct' must be yes or no"),
    ('{"extracted_final_answer": "Paris", "verdict": "yes"}', "JSON object without 'correct'"),
    ('{"extracted_final_answer": "Paris", "correct": "ye', "no verdict"),       # cut off
    ("correct: yes\ncorrect: no", "ambiguous"),
    ("correct: probably", "ambiguous"),
    ('{"correct": 2}', "'correct' must be yes or no"),
])
def test_malformed_replies_are_judge_errors_never_correct(reply, why):
  verdict = parse_verdict(reply)
  assert verdict.correct is None and verdict.judge_error
  assert why in verdict.error and verdict.raw == reply


def test_prompt_holds_question_reference_and_response():
  messages = qa_messages(" What is 17*3? ", "51", "It is 51.\n")
  assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
  user = messages[1]["content"]
  assert user == JUDGE_TEMPLATE.format(question="What is 17*3?", answer="51",
                                       response="It is 51.")
  assert '"correct": "yes" or "no"' in user


class FakeJudgeServer:
  """An OpenAI-style /chat/completions route (httpx.MockTransport) with scripted replies."""

  def __init__(self, replies, status=200):
    self.replies, self.status, self.requests = list(replies), status, []

  def handler(self, request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    self.requests.append({"url": str(request.url), "body": body,
                          "auth": request.headers.get("authorization")})
    if self.status != 200:
      return httpx.Response(self.status, text="overloaded")
    content = self.replies.pop(0)
    return httpx.Response(200, json={
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200}})

  def endpoint(self, **kwargs):
    return ChatEndpoint("http://judge.test/v1", "judge-model", price_in_per_1m=2.0,
                        price_out_per_1m=8.0, transport=httpx.MockTransport(self.handler),
                        backoff_s=0.0, **kwargs)


def test_judge_caches_replies_on_disk(tmp_path, monkeypatch):
  monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
  server = FakeJudgeServer(['{"extracted_final_answer": "51", "correct": "yes"}',
                            '{"extracted_final_answer": "52", "correct": "no"}'])
  cache = tmp_path / "cache"

  async def grade_twice():
    judge = Judge(server.endpoint(api_key_env="JUDGE_TEST_KEY"), str(cache))
    first = await judge.judge_qa("What is 17*3?", "51", "It is 51.")
    again = await judge.judge_qa("What is 17*3?", "51", "It is 51.")
    other = await judge.judge_qa("What is 17*3?", "51", "It is 52.")
    await judge.aclose()
    # A new Judge (a new process, say) reads the same cache folder.
    fresh = Judge(server.endpoint(api_key_env="JUDGE_TEST_KEY"), str(cache))
    third = await fresh.judge_qa("What is 17*3?", "51", "It is 51.")
    await fresh.aclose()
    return first, again, other, third

  first, again, other, third = asyncio.run(grade_twice())
  assert len(server.requests) == 2                       # the repeats made no HTTP call
  assert first.correct and not first.cached
  assert first.cost_usd == pytest.approx((1000 * 2.0 + 200 * 8.0) / 1e6)
  assert again.correct and again.cached and again.cost_usd == 0.0
  assert third.correct and third.cached and third.extracted_answer == "51"
  assert other.correct is False and other.extracted_answer == "52"
  request = server.requests[0]
  assert request["url"] == "http://judge.test/v1/chat/completions"
  assert request["auth"] == "Bearer sk-test"
  assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0.0
  assert request["body"]["messages"] == qa_messages("What is 17*3?", "51", "It is 51.")
  files = [f for _, _, fs in os.walk(cache) for f in fs]
  assert len(files) == 2 and all(f.endswith(".json") and not f.startswith(".tmp") for f in files)


def test_endpoint_failures_are_judge_errors_and_not_cached(tmp_path):
  failing = FakeJudgeServer([], status=503)
  judge = Judge(failing.endpoint(max_retries=2), str(tmp_path))
  verdict = asyncio.run(judge.judge_qa("q", "a", "resp"))
  assert verdict.correct is None and "HTTP 503" in verdict.error and "3 tries" in verdict.error
  assert len(failing.requests) == 3 and not any(f for _, _, f in os.walk(tmp_path))

  # An empty response is wrong without asking; a malformed reply is an error, never correct.
  odd = FakeJudgeServer(["I think it is right."])
  judge = Judge(odd.endpoint(), str(tmp_path), temperature=None)
  empty = asyncio.run(judge.judge_qa("q", "a", "   "))
  assert empty.correct is False and not odd.requests
  bad = asyncio.run(judge.judge_qa("q", "a", "resp"))
  assert bad.correct is None and "no verdict" in bad.error
  assert "temperature" not in odd.requests[0]["body"]


def test_endpoint_settings_are_checked(monkeypatch):
  monkeypatch.delenv("MISSING_JUDGE_KEY", raising=False)
  with pytest.raises(JudgeConfigError, match="MISSING_JUDGE_KEY"):
    ChatEndpoint("https://api.openai.com/v1", "gpt-5-mini", api_key_env="MISSING_JUDGE_KEY")
  with pytest.raises(JudgeConfigError, match="http:// or https://"):
    ChatEndpoint("api.openai.com/v1", "gpt-5-mini")
  with pytest.raises(JudgeConfigError, match="price_in_per_1m"):
    ChatEndpoint("http://127.0.0.1:1/v1", "m", price_in_per_1m=-1)
