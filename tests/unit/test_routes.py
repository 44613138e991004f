"""Several inference hosts behind one gateway (module_utils/_routes.py, filter litellm_gateway): which host
serves which name, from each host's own fleet inputs and the entries' placement, and the LiteLLM config that
routes them (a deployment per name and host, keys named by environment variable only)."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.routes import litellm_gateway

GROUPS = {"all": ["gpu-a", "gpu-b", "gw"], "llm_servers": ["gpu-a", "gpu-b"], "big": ["gpu-b"], "llm_gateways": ["gw"]}
SHA = "0" * 64


def entry(name: str, **fields) -> dict:
    return {"name": name, "source": {"path": f"/m/{name}.gguf", "sha256": SHA}, "context": 4096, **fields}


FLEET = [
    entry("coder", aliases=["code"]),
    entry("chat", hosts=["gpu-a"]),
    entry("big", hosts=["big"]),
    entry("coder-new", candidate_for="coder", hosts=["gpu-b"]),
]


def hostvars(**per_host) -> dict:
    base = {
        host: {
            "llmrig_planner_fleet": FLEET,
            "llmrig_planner_fleet_overrides": {},
            "llmrig_planner_fleet_promoted": {},
            "llmrig_gateway_upstream_url": f"http://{host}:8080",
            "llmrig_gateway_api_key": f"key-of-{host}-0123456789",
        }
        for host in GROUPS["llm_servers"]
    }
    for host, changes in per_host.items():
        base[host].update(changes)
    return base


SETTINGS = {
    "self_host": "gw",
    "self_url": "http://127.0.0.1:8080",
    "master_key": "clients-key-0123456789",
    "master_key_env": "LLMRIG_LITELLM_MASTER_KEY",
    "timeout_s": 600,
    "num_retries": 2,
    "allowed_fails": 1,
    "cooldown_s": 30,
}


def test_names_are_routed_to_the_hosts_that_serve_them_with_replicas():
    result = litellm_gateway(["gpu-a", "gpu-b"], hostvars(), GROUPS, SETTINGS)
    assert result["routes"] == {
        "coder": ["gpu-a", "gpu-b"],
        "code": ["gpu-a", "gpu-b"],
        "chat": ["gpu-a"],
        "big": ["gpu-b"],
        "coder-new": ["gpu-b"],
    }
    deployments = [
        (d["model_name"], d["litellm_params"]["api_base"], d["litellm_params"]["api_key"])
        for d in result["config"]["model_list"]
    ]
    assert ("coder", "http://gpu-a:8080/v1", "os.environ/LLMRIG_UPSTREAM_KEY_1") in deployments
    assert ("coder", "http://gpu-b:8080/v1", "os.environ/LLMRIG_UPSTREAM_KEY_2") in deployments
    assert ("big", "http://gpu-b:8080/v1", "os.environ/LLMRIG_UPSTREAM_KEY_2") in deployments
    assert len(deployments) == 7
    # the name goes upstream as the client sent it: each host's router resolves its own aliases
    assert {d["litellm_params"]["model"] for d in result["config"]["model_list"]} == {
        f"openai/{n}" for n in result["routes"]
    }
    assert result["config"]["router_settings"] == {
        "routing_strategy": "simple-shuffle",
        "num_retries": 2,
        "allowed_fails": 1,
        "cooldown_time": 30,
        "retry_after": 0,
    }
    assert result["config"]["general_settings"] == {"master_key": "os.environ/LLMRIG_LITELLM_MASTER_KEY"}
    # keys live in the environment file only, never in the config
    assert result["keys"] == {
        "LLMRIG_LITELLM_MASTER_KEY": "clients-key-0123456789",
        "LLMRIG_UPSTREAM_KEY_1": "key-of-gpu-a-0123456789",
        "LLMRIG_UPSTREAM_KEY_2": "key-of-gpu-b-0123456789",
    }
    text = json.dumps(result["config"])
    assert not any(key in text for key in result["keys"].values())


def test_a_hosts_promotion_and_overrides_change_only_its_own_names():
    promoted = {"gpu-b": {"llmrig_planner_fleet_promoted": {"coder": "coder-new"}}}
    result = litellm_gateway(["gpu-a", "gpu-b"], hostvars(**promoted), GROUPS, SETTINGS)
    # on gpu-b the candidate answers to coder and code now, and the incumbent serves on as coder--previous
    assert result["routes"]["coder"] == ["gpu-a", "gpu-b"] and result["routes"]["coder--previous"] == ["gpu-b"]
    overridden = {"gpu-a": {"llmrig_planner_fleet_overrides": {"chat": {"aliases": ["talk"]}}}}
    assert litellm_gateway(["gpu-a", "gpu-b"], hostvars(**overridden), GROUPS, SETTINGS)["routes"]["talk"] == ["gpu-a"]


def test_the_gateway_host_reaches_its_own_router_locally():
    groups = {**GROUPS, "all": ["gpu-a", "gpu-b"], "llm_gateways": ["gpu-a"]}
    result = litellm_gateway(["gpu-a", "gpu-b"], hostvars(), groups, {**SETTINGS, "self_host": "gpu-a"})
    bases = {d["model_info"]["id"]: d["litellm_params"]["api_base"] for d in result["config"]["model_list"]}
    assert bases["gpu-a/chat"] == "http://127.0.0.1:8080/v1" and bases["gpu-b/big"] == "http://gpu-b:8080/v1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"gpu-b": {"llmrig_planner_fleet_overrides": {"chat": {"threads": "many"}}}},
            "fleet entry 'chat' (#2): field 'threads': on host gpu-b: ",
        ),
        (
            {"gpu-a": {"llmrig_planner_fleet": [entry("x", hosts=["nowhere"])]}},
            "fleet entry 'x' (#1): field 'hosts': on host gpu-a: 'nowhere' is neither a host nor a group",
        ),
    ],
)
def test_a_fleet_error_on_any_host_names_the_host_the_entry_and_the_field(changes, message):
    with pytest.raises(AnsibleFilterError) as error:
        litellm_gateway(["gpu-a", "gpu-b"], hostvars(**changes), GROUPS, SETTINGS)
    assert str(error.value).startswith(message), str(error.value)


def test_no_inference_host_is_refused():
    with pytest.raises(AnsibleFilterError, match="llmrig_litellm_servers: no inference host"):
        litellm_gateway([], hostvars(), GROUPS, SETTINGS)
