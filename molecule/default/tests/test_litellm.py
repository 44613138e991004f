"""The gateway host (llm_gateways: LiteLLM, roles/llmrig_litellm) on the test container, in front of the
container's own router: every fleet name through the official SDKs, streaming, its own key (not the
router's), a clear error for a name no host serves, the sandboxed service, and the gateway's overhead
against the router in one interleaved run of the harness (figures printed; the targets are read from them,
not asserted). Several inference hosts behind it are the multi-host scenario's."""

from __future__ import annotations

import os

import anthropic
import openai
import pytest
from llmrig_testlib import API_KEY, GATEWAY_URL, gateway_overhead, request

LITELLM_URL = os.environ.get("LLMRIG_LITELLM_URL", "http://127.0.0.1:14000")
GATEWAY_KEY = "llmrig-gateway-test-key-not-secret"


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{LITELLM_URL}/v1", api_key=GATEWAY_KEY, timeout=120, max_retries=0)


def test_the_gateway_lists_and_answers_every_name_the_router_serves(client):
    status, body = request("GET", "/models")
    assert status == 200
    served = {m["id"] for m in body["data"]} | {alias for m in body["data"] for alias in m.get("aliases", [])}
    listed = {model.id for model in client.models.list()}
    # names the router serves beside the fleet's (a promotion's <name>--previous) reach the gateway with the
    # next converge of gateway.yml; every fleet name is listed
    assert {"gemma-a", "gemma-small", "gemma-b"} <= listed <= served, (listed, served)
    answer = client.chat.completions.create(
        model="gemma-small", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert answer.model == "gemma-small" and answer.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="gemma-b", messages=[{"role": "user", "content": "Count."}], max_tokens=8, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text and chunks[-1].choices[0].finish_reason in ("length", "stop"), chunks[-1]


def test_anthropic_clients_reach_the_models_through_the_gateway():
    claude = anthropic.Anthropic(base_url=LITELLM_URL, api_key=GATEWAY_KEY, timeout=120, max_retries=0)
    message = claude.messages.create(
        model="gemma-a", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert message.content and message.content[0].type == "text" and message.usage.output_tokens > 0


def test_the_gateway_takes_its_own_key_and_the_router_takes_its_own(client):
    wrong = openai.OpenAI(base_url=f"{LITELLM_URL}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        wrong.models.list()
    assert refused.value.status_code in (400, 401), refused.value
    assert request("GET", "/v1/models", key=GATEWAY_KEY)[0] == 401


def test_a_name_no_host_serves_gets_a_clear_error(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gemma-nowhere", messages=[{"role": "user", "content": "x"}])
    assert "Invalid model name passed in model=gemma-nowhere" in str(refused.value)


def test_the_service_is_sandboxed_and_its_keys_are_root_only(host):
    unit = host.run("systemctl show -p User -p ActiveState llmrig-litellm").stdout.split()
    assert "User=llmrig-litellm" in unit and "ActiveState=active" in unit
    keys = host.file("/etc/llmrig-litellm/keys.env")
    assert (keys.user, keys.group, keys.mode) == ("root", "root", 0o600)
    config = host.file("/etc/llmrig-litellm/config.yaml").content_string
    assert GATEWAY_KEY not in config and API_KEY not in config and "os.environ/LLMRIG_UPSTREAM_KEY_1" in config
    score = host.run("systemd-analyze security llmrig-litellm | tail -1").stdout.strip()
    print(f"\n{score}")
    assert float(score.split("level for llmrig-litellm.service: ")[1].split()[0]) <= 3.7, score


@pytest.mark.quiet
def test_the_gateways_overhead_against_the_router_in_one_interleaved_run(tmp_path):
    key_file = tmp_path / "gateway-key"
    key_file.write_text(GATEWAY_KEY)
    gateway_overhead(GATEWAY_URL, LITELLM_URL, key_file, "gemma-a", repetitions=4, base="router")
