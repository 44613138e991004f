# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for llama-swap as a host's front (roles/llmrig_gateway, llmrig_gateway_backend: llama-swap)."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.module_utils._llamaswap import check, render


def llamaswap_config(resolved: dict, settings: dict) -> dict:
    """llama-swap's config for the resolved fleet (llmrig_planner_plan), checked against llama-swap's
    documented keys and types; a departure fails the task, naming every key at fault."""
    config = render(resolved, settings)
    errors = check(config)
    if errors:
        raise AnsibleFilterError(
            "the rendered llama-swap config departs from llama-swap's documented keys: " + "; ".join(errors)
        )
    return config


def llamaswap_check(config: Any) -> list[str]:
    """How a llama-swap config departs from the documented keys and types (empty: it conforms)."""
    return check(config)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"llamaswap_config": llamaswap_config, "llamaswap_check": llamaswap_check}
