# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several inference hosts behind one gateway: which host serves which model name, and the LiteLLM proxy's
config.yaml that routes them.

Each inference host's names come from the same steps as its own plan (its overrides and promotions applied,
the fleet validated, the entries placed on it), without reading any model file: the gateway needs names and
hosts only. A name served by several hosts gets one LiteLLM deployment per host (replicas): LiteLLM spreads
requests over them, retries a failed request on another, and cools a failing one down."""

from __future__ import annotations

from typing import Any

from ansible_collections.llmrig.serving.plugins.module_utils._fleet import (
    FleetError,
    apply_overrides,
    apply_promotions,
    place,
    validate_fleet,
)


def host_names(fleet: Any, overrides: Any, promoted: Any, host: str, inventory: dict, servers: list[str]) -> list[str]:
    """The names (and aliases) clients may send that `host`'s router serves, in fleet order."""
    entries = validate_fleet(apply_promotions(apply_overrides(fleet, overrides), promoted))
    names: list[str] = []
    for entry in place(entries, host, inventory, servers):
        names += [entry["name"], *entry["aliases"]]
    return names


def routes(hosts: list[dict], inventory: dict, servers: list[str]) -> dict[str, list[str]]:
    """{name: [hosts that serve it]} over the inference hosts, each given as {host, fleet, overrides,
    promoted}; names in the order the first host that serves them lists them."""
    found: dict[str, list[str]] = {}
    for item in hosts:
        try:
            names = host_names(item["fleet"], item["overrides"], item["promoted"], item["host"], inventory, servers)
        except FleetError as exc:
            raise FleetError(exc.entry, exc.field, f"on host {item['host']}: {exc.reason}") from exc
        for name in names:
            found.setdefault(name, []).append(item["host"])
    return found


def litellm_config(names: dict[str, list[str]], upstreams: dict[str, dict], settings: dict) -> dict:
    """LiteLLM's config.yaml: a deployment per name and host (`upstreams[host]`: url, key_env: the environment
    variable that holds that host's API key), the router's retries and cooldown, Prometheus metrics and the
    clients' key from the environment. `settings`: timeout_s, num_retries, allowed_fails, cooldown_s,
    master_key_env."""
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": upstreams[host]["url"].rstrip("/") + "/v1",
                "api_key": "os.environ/" + upstreams[host]["key_env"],
                "timeout": settings["timeout_s"],
                "stream_timeout": settings["timeout_s"],
            },
            "model_info": {"id": f"{host}/{name}"},
        }
        for name, hosts in names.items()
        for host in hosts
    ]
    return {
        "model_list": model_list,
        "litellm_settings": {
            "callbacks": ["prometheus"],
            "request_timeout": settings["timeout_s"],
            "drop_params": False,
        },
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": settings["num_retries"],
            "allowed_fails": settings["allowed_fails"],
            "cooldown_time": settings["cooldown_s"],
            "retry_after": 0,
        },
        "general_settings": {"master_key": "os.environ/" + settings["master_key_env"]},
    }
