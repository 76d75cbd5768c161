"""HTTPEngine against tiny HTTP servers on 127.0.0.1: retries, counted tries, least-busy routing.

The servers (`FakeServer`) run in the test's own event loop, speak just enough
HTTP/1.1 for the client, count every request they get, can drop the first N
connections unanswered (a retryable failure for the client), answer an error
status, or hold requests in flight until released. The `sleeps` fixture records
`asyncio.sleep` calls instead of sleeping, so backoffs are checked exactly and cost no time.
"""

import asyncio
import json
import socket

import pytest
from sleeps_fixture import REAL_SLEEP, sleeps  # noqa: F401 (sleeps: a fixture)

from orchestra.engines import EngineError, SamplingParams
from orchestra.engines.http_engine import HTTPEngine

GREEDY = SamplingParams(max_tokens=2, temperature=0.0)


class FakeServer:
  """A minimal vLLM-like server: /v1/completions answers tokens [7, 8] with logprobs.

  Args:
    drop_first: close this many connections without a response before answering.
    errors: {path: HTTP status} answered with `{"error": ...}` instead of 200.
    held: if True, completions wait for `release` before answering.
    finish_reason: the completions' finish reason ("abort": vLLM's for an aborted request).
  """

  def __init__(self, drop_first=0, errors=None, held=False, finish_reason="length"):
    self.drop_first, self.errors, self.finish_reason = drop_first, errors or {}, finish_reason
    self.release = asyncio.Event()
    if not held:
      self.release.set()
    self.requests = []                   # (method, path, JSON body) of every request received
    self.in_flight = self.peak = 0

  async def __aenter__(self):
    self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
    self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
    return self

  async def __aexit__(self, *exc):
    self.release.set()
    self._server.close()
    await self._server.wait_closed()

  @property
  def completions(self):
    return sum(path == "/v1/completions" for _, path, _ in self.requests)

  async def _handle(self, reader, writer):
    try:
      head = (await reader.readuntil(b"\r\n\r\n")).decode()
      method, path, _ = head.split("\r\n")[0].split(" ")
      length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                     if line.lower().startswith("content-length:")), 0)
      body = json.loads(await reader.readexactly(length)) if length else None
      self.requests.append((method, path, body))
      if len(self.requests) <= self.drop_first:
        return                           # hang up without a word: RemoteProtocolError
      self.in_flight += 1
      self.peak = max(self.peak, self.in_flight)
      try:
        if path == "/v1/completions":
          await self.release.wait()
      finally:
        self.in_flight -= 1
      status = self.errors.get(path.split("?")[0], 200)
      answer = ({"choices": [{"token_ids": [7, 8], "logprobs": {"token_logprobs": [-0.5, -0.25]},
                              "finish_reason": self.finish_reason,
                              "weight_versions": [{"version": "3", "start": 0, "end": 2}]}]}
                if status == 200 else {"error": "model overloaded"})
      payload = json.dumps(answer).encode()
      writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                   + payload)
      await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
      pass
    finally:
      writer.close()


async def until(predicate, what, limit_s=30.0):
  """Waits (really, whatever `sleeps` did) until `predicate()`; fails after `limit_s`."""
  loop = asyncio.get_running_loop()
  deadline = loop.time() + limit_s
  while not predicate():
    if loop.time() > deadline:
      raise AssertionError(f"never happened: {what}")
    await REAL_SLEEP(0.001)


def test_retries_dropped_connections_with_backoff_then_succeeds(sleeps):
  async def main():
    async with FakeServer(drop_first=2) as server:
      engine = HTTPEngine([server.url], "m", max_retries=2, backoff_s=0.5)
      try:
        return await engine.generate([1, 2, 3], GREEDY), server.requests
      finally:
        await engine.aclose()

  completion, requests = asyncio.run(main())
  assert completion.token_ids == [7, 8] and completion.logprobs == [-0.5, -0.25]
  assert completion.weight_version == 3 and completion.finish_reason == "length"
  assert len(requests) == 3                          # two dropped, the third answered
  assert all(body == requests[0][2] for _, _, body in requests)   # the same request each time
  assert requests[0][2]["prompt"] == [1, 2, 3] and requests[0][2]["return_token_ids"]
  assert sleeps == [0.5, 1.0]                        # exponential backoff between tries


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_gives_up_after_exactly_max_retries_plus_one_tries(sleeps, max_retries):
  async def main():
    async with FakeServer(drop_first=100) as server:
      engine = HTTPEngine([server.url], "m", max_retries=max_retries, backoff_s=0.25)
      try:
        with pytest.raises(EngineError) as error:
          await engine.generate([1], GREEDY)
      finally:
        await engine.aclose()
      return str(error.value), server.completions

  message, tries = asyncio.run(main())
  assert tries == max_retries + 1
  assert f"unreachable after {max_retries + 1} tries" in message
  assert sleeps == [0.25 * 2**k for k in range(max_retries)]      # none after the last try


def test_a_refused_connection_counts_as_a_try(sleeps):
  """Nothing listening (the port held, not listening): the same policy, the connect error named."""
  with socket.socket() as held:
    held.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{held.getsockname()[1]}"

    async def main():
      engine = HTTPEngine([url], "m", max_retries=2, backoff_s=0.1)
      try:
        with pytest.raises(EngineError, match="unreachable after 3 tries .ClientConnectorError"):
          await engine.generate([1], GREEDY)
      finally:
        await engine.aclose()

    asyncio.run(main())
  assert sleeps == [0.1, 0.2]


def completions_until_refused(server: dict, match: str, **engine) -> int:
  """Runs one request that must fail with an EngineError matching `match` against a
  `FakeServer(**server)`; returns how many completions the server received."""
  async def main():
    async with FakeServer(**server) as fake:
      client = HTTPEngine([fake.url], "m", max_retries=3, backoff_s=0.1, **engine)
      try:
        with pytest.raises(EngineError, match=match):
          await client.generate([1], GREEDY)
      finally:
        await client.aclose()
      return fake.completions

  return asyncio.run(main())


def test_an_http_error_status_is_not_retried(sleeps):
  tries = completions_until_refused({"errors": {"/v1/completions": 503}},
                                    "HTTP 503.*model overloaded")
  assert tries == 1 and sleeps == []


def test_a_read_timeout_is_not_retried_and_names_the_timeout(sleeps):
  """A server that holds the request past `timeout_s`: one try (the request may still be
  running there), then the engine has no server left and says it timed out."""
  tries = completions_until_refused({"held": True}, "server timed out", timeout_s=0.2)
  assert tries == 1 and sleeps == []


def test_concurrent_requests_spread_evenly_over_the_servers():
  """Six requests in flight at once on three servers: two each, never three on one."""
  async def main():
    async with FakeServer(held=True) as a, FakeServer(held=True) as b, FakeServer(held=True) as c:
      servers = [a, b, c]
      engine = HTTPEngine([s.url for s in servers], "m")
      try:
        jobs = [asyncio.create_task(engine.generate([i + 1], GREEDY)) for i in range(6)]
        await until(lambda: sum(s.in_flight for s in servers) == 6, "six requests in flight")
        in_flight = [s.in_flight for s in servers]
        for s in servers:
          s.release.set()
        results = await asyncio.gather(*jobs)
      finally:
        await engine.aclose()
      return in_flight, [s.peak for s in servers], results

  in_flight, peaks, results = asyncio.run(main())
  assert in_flight == [2, 2, 2] and peaks == [2, 2, 2]
  assert all(r.token_ids == [7, 8] for r in results)


def test_requests_avoid_a_busy_server_until_it_is_free():
  """Least busy, not round robin: while one server holds a request, the next five (sent one
  after another) all go to the two idle servers; once it is free it takes requests again."""
  async def main():
    async with FakeServer(held=True) as a, FakeServer(held=True) as b, FakeServer(held=True) as c:
      servers = [a, b, c]
      engine = HTTPEngine([s.url for s in servers], "m")
      try:
        stuck = asyncio.create_task(engine.generate([1], GREEDY))
        await until(lambda: sum(s.in_flight for s in servers) == 1, "the first request arrives")
        busy = next(s for s in servers if s.in_flight)
        idle = [s for s in servers if s is not busy]
        for s in idle:
          s.release.set()
        for i in range(5):
          done, _ = await asyncio.wait([asyncio.create_task(engine.generate([i + 2], GREEDY))],
                                       timeout=10)
          assert done, "a request was sent to the busy server (it holds requests)"
        during = [busy.completions] + [s.completions for s in idle]
        busy.release.set()
        await stuck
        await asyncio.gather(*(engine.generate([9], GREEDY) for _ in range(3)))
        after = [busy.completions] + [s.completions for s in idle]
      finally:
        await engine.aclose()
      return during, after

  during, after = asyncio.run(main())
  assert during[0] == 1 and during[1] + during[2] == 5
  assert [x - y for x, y in zip(after, during, strict=True)] == [1, 1, 1]


def test_requests_on_a_dead_server_move_to_a_live_one_and_free_their_slots():
  """Four concurrent requests split 2/2 over a dead and a live server; the dead one's two
  move to the live one (none is lost), it is marked down, and no slot stays counted."""
  async def main():
    async with FakeServer(drop_first=100) as dead, FakeServer() as live:
      engine = HTTPEngine([dead.url, live.url], "m", max_retries=0)
      try:
        outcomes = await asyncio.gather(*(engine.generate([1], GREEDY) for _ in range(4)))
        after = await engine.generate([2], GREEDY)          # goes straight to the live one
      finally:
        await engine.aclose()
      return len(dead.requests), live.completions, outcomes + [after], engine, dead.url

  dead_requests, live_requests, outcomes, engine, dead_url = asyncio.run(main())
  assert len(outcomes) == 5 and all(o.token_ids == [7, 8] for o in outcomes)
  assert (dead_requests, live_requests) == (2, 5)
  assert engine.down == {dead_url} and engine.failovers == 2
  assert set(engine._load.values()) == {0}


def test_no_server_left_is_one_engine_error_naming_why(sleeps):
  async def main():
    async with FakeServer(drop_first=100) as a, FakeServer(drop_first=100) as b:
      engine = HTTPEngine([a.url, b.url], "m", max_retries=1, backoff_s=0.1)
      try:
        with pytest.raises(EngineError, match="no rollout server left: .*unreachable after 2 tries"):
          await engine.generate([1], GREEDY)
      finally:
        await engine.aclose()
      return len(a.requests) + len(b.requests)

  assert asyncio.run(main()) == 4                      # 2 tries on each server, then done


def test_an_episode_session_stays_on_its_server():
  """Every turn of one episode goes to the server of its first turn, though the other is
  less busy; requests outside the session still go to the least busy."""
  async def main():
    async with FakeServer() as a, FakeServer() as b:
      engine = HTTPEngine([a.url, b.url], "m")
      try:
        session = engine.session()
        await session.generate([1], GREEDY)               # both idle: the first server
        engine._load[a.url] += 5                           # now a is the busier one
        for _ in range(3):
          await session.generate([1, 2], GREEDY)
        await engine.generate([3], GREEDY)
      finally:
        await engine.aclose()
      return session.server, a.url, a.completions, b.completions

  pinned, a_url, on_a, on_b = asyncio.run(main())
  assert pinned == a_url and (on_a, on_b) == (4, 1)


def test_update_weights_walks_every_server_through_vllms_reload_routes():
  async def main():
    async with FakeServer() as a, FakeServer() as b:
      engine = HTTPEngine([a.url, b.url], "m")
      try:
        await engine.update_weights("/ckpt/step_7", version=7)
      finally:
        await engine.aclose()
      return engine.weight_version, [[(m, p, body) for m, p, body in s.requests] for s in (a, b)]

  version, requests = asyncio.run(main())
  assert version == 7
  for server_requests in requests:
    assert server_requests == [
        ("POST", "/pause?mode=wait", None),
        ("POST", "/collective_rpc", {"method": "reload_weights",
                                     "kwargs": {"weights_path": "/ckpt/step_7"}}),
        ("POST", "/reset_prefix_cache", None),
        ("POST", "/update_weight_version", {"new_version": "7"}),
        ("POST", "/resume", None)]


def test_a_failed_reload_still_resumes_the_server():
  async def main():
    async with FakeServer(errors={"/collective_rpc": 400}) as server:
      engine = HTTPEngine([server.url], "m")
      try:
        with pytest.raises(EngineError, match="collective_rpc: HTTP 400"):
          await engine.update_weights("/nope", version=1)
      finally:
        await engine.aclose()
      return [p for _, p, _ in server.requests], engine.weight_version

  paths, version = asyncio.run(main())
  assert paths == ["/pause?mode=wait", "/collective_rpc", "/resume"] and version == 0


def test_a_server_that_is_unavailable_sends_its_turns_to_another(sleeps):
  """503 says 'not now' about the server: its turns move on (it used to answer every turn
  at once with an error, and least-busy routing kept picking it)."""
  async def main():
    async with FakeServer(errors={"/v1/completions": 503}) as bad, FakeServer() as good:
      engine = HTTPEngine([bad.url, good.url], "m")
      try:
        outs = await asyncio.gather(*(engine.generate([1], GREEDY) for _ in range(8)))
      finally:
        await engine.aclose()
      return outs, bad.completions, good.completions, engine.down, bad.url

  outs, on_bad, on_good, down, bad_url = asyncio.run(main())
  assert [o.token_ids for o in outs] == [[7, 8]] * 8
  assert on_good == 8 and on_bad >= 1 and down == {bad_url}


def test_an_answer_that_is_not_json_is_an_engine_error():
  async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = b"<html>oops</html>"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    writer.close()

  async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    engine = HTTPEngine([f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"], "m")
    try:
      with pytest.raises(EngineError, match="the answer is not JSON .HTTP 200: <html>oops"):
        await engine.generate([1], GREEDY)
    finally:
      await engine.aclose()
      server.close()

  asyncio.run(main())


def test_a_reload_that_fails_on_one_server_resumes_all_and_benches_that_one():
  """Every server goes through to /resume before anything is raised, the failed one is
  left out of the next turns, and the sync only fails when every server failed."""
  async def main():
    async with FakeServer(errors={"/collective_rpc": 400}) as bad, FakeServer() as good:
      engine = HTTPEngine([bad.url, good.url], "m")
      try:
        await engine.update_weights("/ckpt/step_2", version=2)
        await engine.generate([1], GREEDY)
      finally:
        await engine.aclose()
      return ([p for _, p, _ in bad.requests], [p for _, p, _ in good.requests], engine.down,
              bad.url, engine.weight_version, good.completions)

  bad_paths, good_paths, down, bad_url, version, on_good = asyncio.run(main())
  assert bad_paths == ["/pause?mode=wait", "/collective_rpc", "/resume"]
  assert good_paths == ["/pause?mode=wait", "/collective_rpc", "/reset_prefix_cache",
                        "/update_weight_version", "/resume", "/v1/completions"]
  assert down == {bad_url} and version == 2 and on_good == 1


def test_an_aborted_generation_is_redone_on_another_server():
  """vLLM ends a request aborted by `/pause?mode=abort` with finish_reason "abort" and the
  tokens so far: a cut turn, not an answer."""
  async def main():
    async with FakeServer(finish_reason="abort") as aborting, FakeServer() as good:
      engine = HTTPEngine([aborting.url, good.url], "m")
      try:
        return (await engine.generate([1], GREEDY), aborting.completions, good.completions,
                engine.failovers)
      finally:
        await engine.aclose()

  completion, on_aborting, on_good, failovers = asyncio.run(main())
  assert completion.finish_reason == "length"
  assert (on_aborting, on_good, failovers) == (1, 1, 1)
