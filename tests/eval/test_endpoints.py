"""endpoint_from_spec: the one builder of chat endpoints, its errors naming the caller's setting."""

import pytest

from orchestra.eval.endpoints import EndpointSpec, endpoint_from_spec, setting_names
from orchestra.eval.judge import JudgeConfigError
from orchestra.eval.qa_settings import JudgeSpec

AGENT = setting_names("--agent_")


def test_a_valid_spec_builds_the_endpoint(monkeypatch):
  monkeypatch.setenv("ENDPOINT_TEST_KEY", "sk-test")
  ep = endpoint_from_spec(EndpointSpec("http://h:8000/v1/", "m", "ENDPOINT_TEST_KEY", 1.0, 2.0),
                          AGENT)
  assert (ep.base_url, ep.model, ep.price_in, ep.price_out) == ("http://h:8000/v1", "m", 1.0, 2.0)
  judge = endpoint_from_spec(JudgeSpec("http://j/v1", "judge"), setting_names("--judge_"))
  assert judge.model == "judge"


@pytest.mark.parametrize("spec, names, message", [
    (EndpointSpec(None, "m"), AGENT, "--agent_url and --agent_model are required"),
    (EndpointSpec("http://h/v1", ""), AGENT, "--agent_url and --agent_model are required"),
    (EndpointSpec("http://h/v1", "m", "ENDPOINT_TEST_UNSET"), setting_names("config.env.user_"),
     "config.env.user_api_key_env: environment variable ENDPOINT_TEST_UNSET"),
    (EndpointSpec("h:8000/v1", "m"), setting_names("--", url="base_url"),
     "--base_url: base_url 'h:8000/v1' must start with http://"),
    (EndpointSpec("http://h/v1", "m", price_out_per_1m=-1), setting_names("--judge_",
                                                                          url="base_url"),
     "--judge_price_out: price_out_per_1m must be a number >= 0"),
])
def test_a_bad_setting_is_named_as_the_caller_spells_it(monkeypatch, spec, names, message):
  monkeypatch.delenv("ENDPOINT_TEST_UNSET", raising=False)
  with pytest.raises(JudgeConfigError) as info:
    endpoint_from_spec(spec, names)
  assert str(info.value).startswith(message), str(info.value)
