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


def host_addresses(hosts: Any, hostvars: Any) -> list[str]:
    """Every address of the inventory hosts `hosts` from their gathered facts (IPv4 and IPv6, link-local
    left out), for the firewall's peers; a host whose network facts were not gathered fails naming it."""
    found: list[str] = []
    for name in hosts:
        facts = (hostvars[name] if name in hostvars else {}).get("ansible_facts", {})
        if "all_ipv4_addresses" not in facts:
            raise AnsibleFilterError(
                f"llmrig_firewall_peers: no network facts of host {name!r} (gather facts on the gateway and"
                " monitoring hosts first: playbooks/security.yml does)"
            )
        for address in [*facts["all_ipv4_addresses"], *facts.get("all_ipv6_addresses", [])]:
            if not ipaddress.ip_address(address).is_link_local and address not in found:
                found.append(address)
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"firewall_networks": firewall_networks, "host_addresses": host_addresses}
