# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Networks for the host firewall: checked, normalised and split by address family."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError


def firewall_networks(networks: Any, variable: str = "llmrig_firewall_allowed_networks") -> dict[str, list[str]]:
    """{'ipv4': [...], 'ipv6': [...]} from CIDR strings (a bare address is a /32 or /128); an entry that is no
    network, or has host bits set (192.168.1.5/24), fails naming it."""
    if not isinstance(networks, list):
        raise AnsibleFilterError(f"{variable} must be a list of networks (CIDR), got {networks!r}")
    split: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
    for item in networks:
        try:
            network = ipaddress.ip_network(str(item).strip(), strict=True)
        except ValueError as exc:
            raise AnsibleFilterError(f"{variable}: {item!r} is not a network in CIDR form ({exc})") from exc
        split["ipv4" if network.version == 4 else "ipv6"].append(str(network))
    return split


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"firewall_networks": firewall_networks}
