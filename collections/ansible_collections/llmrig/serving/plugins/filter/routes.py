# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the gateway host in front of several inference hosts (roles/llmrig_litellm)."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import FleetError
from ansible_collections.llmrig.serving.plugins.module_utils._routes import litellm_config, routes

# what the gateway reads of each inference host (its own roles' inputs, wired in group_vars)
FLEET_VARS = {"fleet": "llmrig_planner_fleet", "overrides": "llmrig_planner_fleet_overrides",
              "promoted": "llmrig_planner_fleet_promoted"}  # fmt: skip


def litellm_gateway(servers: list[str], hostvars: Any, inventory: dict, settings: dict) -> dict:
    """For the gateway host: `routes` ({name: [hosts]}), LiteLLM's `config` and the `keys` its environment
    file holds ({variable: key}, one per inference host, and the clients' key). Each host is reached at its
    llmrig_gateway_upstream_url, or at settings.self_url when it is the gateway host itself
    (settings.self_host). A fleet error names the host, the entry and the field."""
    if not servers:
        raise AnsibleFilterError("llmrig_litellm_servers: no inference host to route to")
    hosts, upstreams, keys = [], {}, {settings["master_key_env"]: settings["master_key"]}
    for index, host in enumerate(servers, start=1):
        facts = hostvars[host]
        hosts.append({"host": host, **{field: facts[var] for field, var in FLEET_VARS.items()}})
        env = f"LLMRIG_UPSTREAM_KEY_{index}"
        url = settings["self_url"] if host == settings["self_host"] else facts["llmrig_gateway_upstream_url"]
        upstreams[host] = {"url": url, "key_env": env}
        keys[env] = facts["llmrig_gateway_api_key"]
    try:
        names = routes(hosts, inventory, servers)
    except FleetError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    return {"routes": names, "config": litellm_config(names, upstreams, settings), "keys": keys}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"litellm_gateway": litellm_gateway}
