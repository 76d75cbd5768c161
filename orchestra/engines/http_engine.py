"""The trainer's client for vLLM servers (and `launch/serve.py`, which speaks the same API).

Generation is token in, token out: POST /v1/completions with the prompt as
token ids, `return_token_ids`, `logprobs: 0` and `stop_token_ids` with `ignore_eos`
(a turn stops at exactly the caller's stop ids, as in process: vLLM would otherwise add
the model's eos ids from its tokenizer and generation config), and every sampling field
explicit, penalties and min-p off (vLLM fills a field left out from the model's
generation config, e.g. a repetition penalty); the choice's `token_ids` and
`logprobs.token_logprobs` are used as-is (start vLLM with `--logprobs-mode
processed_logprobs` so they include temperature/top-p).
Requests go to the least-busy of several servers. Weight sync uses the disk
path: export HF safetensors, then on every server `/pause?mode=wait` ->
`/collective_rpc reload_weights(weights_path)` -> `/reset_prefix_cache` ->
`/update_weight_version` -> `/resume` (vLLM needs `VLLM_SERVER_DEV_MODE=1`). Each
completion asks for `return_weight_versions` and is tagged with the version it reports.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import aiohttp

from orchestra.engines.base import Completion, EngineError, SamplingParams
from orchestra.http_retry import RequestFailed, describe_error, post_with_retries


class ServerUnreachable(EngineError):
  """A server that did not answer (connection refused or dropped after retries, a timeout),
  or said it cannot now (`UNAVAILABLE`): its requests move to another server."""


# HTTP statuses that say "not now" about the server, not "no" about the request.
UNAVAILABLE = (429, 502, 503, 504)


class HTTPEngine:
  """An `Engine` over one or more OpenAI/vLLM-compatible servers.

  Args:
    base_urls: server roots, e.g. ["http://10.0.0.5:8000"] (no trailing /v1).
    model: the served model name.
    api_key_env: name of an environment variable holding a bearer token (optional).
    timeout_s: per-request timeout.
    max_retries: retries of a request that failed to connect (with backoff).
  """

  def __init__(self, base_urls: Sequence[str], model: str, *, api_key_env: str | None = None,
               timeout_s: float = 600.0, max_retries: int = 2, backoff_s: float = 0.5,
               weight_version: int = 0):
    if not base_urls:
      raise ValueError("HTTPEngine needs at least one server URL")
    headers = {}
    if api_key_env:
      key = os.environ.get(api_key_env)
      if not key:
        raise ValueError(f"environment variable {api_key_env} (the API key) is not set")
      headers["Authorization"] = f"Bearer {key}"
    self.base_urls = [u.rstrip("/") for u in base_urls]
    self.model = model
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.weight_version = weight_version
    self._load = dict.fromkeys(self.base_urls, 0)
    self.down: set[str] = set()            # servers that stopped answering
    self.failovers = 0                     # requests moved off a failed server
    self._headers, self._timeout_s = headers, timeout_s
    self._client: aiohttp.ClientSession | None = None    # opened in the first request's loop

  async def generate(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> Completion:
    """One completion from the least-busy server (another one if it fails to answer)."""
    return (await self.generate_on(None, prompt_ids, sampling))[1]

  def session(self) -> "EngineSession":
    """An engine for one episode: every turn goes to the server of its first turn (whose
    prefix cache holds the conversation so far), and to another if that one fails."""
    return EngineSession(self)

  async def generate_on(self, preferred: str | None, prompt_ids: Sequence[int],
                        sampling: SamplingParams) -> tuple[str, Completion]:
    """(the server that answered, its completion): `preferred` if it is up, else the
    least-busy server up. A server that cannot be reached (after retries) or times out is
    marked down and the request moves on; `EngineError` when no server is left."""
    payload = {"model": self.model, "prompt": [int(t) for t in prompt_ids],
               "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
               "top_p": sampling.top_p, "top_k": sampling.top_k or -1, "min_p": 0.0,
               "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
               "n": 1,
               "logprobs": 0, "return_token_ids": True, "skip_special_tokens": False,
               "stop_token_ids": list(sampling.stop_token_ids),
               "ignore_eos": True, "include_stop_str_in_output": False,
               "return_weight_versions": True}
    if sampling.seed is not None:
      payload["seed"] = sampling.seed
    failures = []
    while True:
      up = [u for u in self.base_urls if u not in self.down]
      if not up:
        raise EngineError("no rollout server left: " + "; ".join(failures or sorted(self.down)))
      url = preferred if preferred in up else min(up, key=self._load.get)   # least in flight
      self._load[url] += 1
      try:
        body = await self._post(url, "/v1/completions", json=payload)
        return url, self._completion(url, body)
      except ServerUnreachable as e:
        self.down.add(url)
        self.failovers += 1
        failures.append(str(e))
      finally:
        self._load[url] -= 1

  def _completion(self, url: str, body: dict) -> Completion:
    try:
      choice = body["choices"][0]
      token_ids = [int(t) for t in choice["token_ids"]]
      logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
    except (KeyError, IndexError, TypeError) as e:
      raise EngineError(f"{url}: completion lacks token_ids/logprobs ({e!r}); "
                        "is it vLLM >= 0.10.2 with return_token_ids?") from None
    if len(token_ids) != len(logprobs):
      raise EngineError(f"{url}: {len(token_ids)} token ids but {len(logprobs)} logprobs")
    if choice.get("finish_reason") == "abort":   # e.g. someone paused it with mode=abort
      raise ServerUnreachable(f"{url}: the server aborted the generation")
    return Completion(token_ids, logprobs, choice.get("finish_reason") or "length",
                      self._version(choice))

  def _version(self, choice: dict) -> int:
    """The weight version of a choice: its first `weight_versions` span (vLLM >= 0.33;
    weights change only while a server is paused, so there is one), else the version this
    client last synced (older servers do not report it)."""
    spans = choice.get("weight_versions") or []
    try:
      return int(spans[0]["version"]) if spans else self.weight_version
    except (KeyError, TypeError, ValueError):
      raise EngineError(f"weight_versions {spans!r}: expected [{{'version': '<step>', ...}}] "
                        "as set by this trainer's /update_weight_version") from None

  def set_servers(self, base_urls: Sequence[str]) -> None:
    """Replaces the server list (e.g. after restarting a dead server on a new port)."""
    self.base_urls = [u.rstrip("/") for u in base_urls]
    self._load = {u: self._load.get(u, 0) for u in self.base_urls}
    self.down = {u for u in self.down if u in self._load}

  async def update_weights(self, source, version: int) -> None:
    """Every server, concurrently, reloads `source` (an exported HF folder they can read)
    and reports `version` from then on:

      POST /pause?mode=wait -> /collective_rpc reload_weights(weights_path) ->
      /reset_prefix_cache -> /update_weight_version {"new_version": "<version>"} -> /resume

    (vLLM 0.33's routes and payloads; they need VLLM_SERVER_DEV_MODE=1 on the server.)
    A server whose sequence fails is resumed and marked down (no turns until the next
    sync); the error is raised when every server failed.
    """
    if not isinstance(source, (str, os.PathLike)):
      raise TypeError("HTTP engines reload from an exported HF folder path; "
                      "export params with orchestra.checkpoint.save_hf first")
    path = os.fspath(source)

    async def reload(url):
      await self._post(url, "/pause", params={"mode": "wait"})
      try:
        await self._post(url, "/collective_rpc", json={
            "method": "reload_weights", "kwargs": {"weights_path": path}})
        await self._post(url, "/reset_prefix_cache")
        await self._post(url, "/update_weight_version", json={"new_version": str(int(version))})
      finally:
        await self._post(url, "/resume")

    # Every server finishes its sequence (and resumes) before anything is raised: an early
    # raise let the caller close the session with other servers still paused.
    targets = [u for u in self.base_urls if u not in self.down]
    results = await asyncio.gather(*(reload(u) for u in targets), return_exceptions=True)
    failed = [(u, r) for u, r in zip(targets, results) if isinstance(r, BaseException)]
    for _, error in failed:
      if not isinstance(error, Exception):
        raise error
    if failed and len(failed) == len(targets):
      raise failed[0][1]
    self.down.update(u for u, _ in failed)   # on its old weights: no turns until the next sync
    self.weight_version = int(version)

  async def _post(self, url: str, route: str, **kwargs):
    """POST with the shared retries (connection failures only: an HTTP error from a rollout
    server is an answer, not a transient fault); EngineError when it fails."""
    if self._client is None:
      self._client = aiohttp.ClientSession(
          headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout_s),
          connector=aiohttp.TCPConnector(limit=0))      # as many connections as turns in flight
    try:
      response = await post_with_retries(self._client, url + route, max_retries=self.max_retries,
                                         backoff_s=self.backoff_s, retry_status=(), **kwargs)
    except RequestFailed as e:
      raise ServerUnreachable(f"{url}{route}: server {e.reason}") from None
    if response.status_code in UNAVAILABLE:
      raise ServerUnreachable(f"{url}{route}: {describe_error(response, self._headers)}")
    if response.status_code >= 400:
      raise EngineError(f"{url}{route}: {describe_error(response, self._headers)}")
    try:
      return response.json() if response.text else {}
    except ValueError:
      raise EngineError(f"{url}{route}: the answer is not JSON "
                        f"({describe_error(response, self._headers)})") from None

  async def aclose(self):
    if self._client is not None:
      await self._client.close()


def vllm_serve_command(model_dir: str, *, port: int = 8000, served_model_name: str | None = None,
                       tensor_parallel_size: int = 1, max_model_len: int | None = None,
                       gpu_memory_utilization: float = 0.9) -> tuple[list[str], dict[str, str]]:
  """(argv, extra env) of the `vllm serve` command an RL rollout server needs."""
  argv = ["vllm", "serve", model_dir, "--port", str(port),
          "--tensor-parallel-size", str(tensor_parallel_size),
          "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1",
          "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
          "--gpu-memory-utilization", str(gpu_memory_utilization)]
  if served_model_name:
    argv += ["--served-model-name", served_model_name]
  if max_model_len:
    argv += ["--max-model-len", str(max_model_len)]
  return argv, {"VLLM_SERVER_DEV_MODE": "1"}


class EngineSession:
  """`HTTPEngine.session()`: the engine of one episode, pinned to one server while it is up."""

  def __init__(self, engine: HTTPEngine):
    self.engine, self.server = engine, None

  async def generate(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> Completion:
    self.server, completion = await self.engine.generate_on(self.server, prompt_ids, sampling)
    return completion
