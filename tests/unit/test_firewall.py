"""The host firewall: the networks filter, and the rules file rendered by Ansible from the role's template
and checked by nft itself (nft --check needs CAP_NET_ADMIN: root here and in CI)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.network import firewall_networks, host_addresses
from test_playbooks import run_play, template_task


def test_networks_are_checked_and_split_by_family():
    assert firewall_networks(["192.168.1.0/24", "fd00::/8", "10.1.2.3"]) == {
        "ipv4": ["192.168.1.0/24", "10.1.2.3/32"],
        "ipv6": ["fd00::/8"],
    }
    assert firewall_networks([]) == {"ipv4": [], "ipv6": []}


@pytest.mark.parametrize(
    ("networks", "says"),
    [
        (["192.168.1.5/24"], "'192.168.1.5/24' is not a network in CIDR form (192.168.1.5/24 has host bits set)"),
        (["lan"], "'lan' is not a network in CIDR form"),
        ("192.168.1.0/24", "must be a list of networks"),
    ],
)
def test_a_bad_network_is_named(networks, says):
    with pytest.raises(AnsibleFilterError, match="llmrig_firewall_allowed_networks"):
        firewall_networks(networks)
    with pytest.raises(AnsibleFilterError) as failure:
        firewall_networks(networks)
    assert says in str(failure.value)


def render(tmp_path: Path, networks: list[str], ports: list[int], **api: Any) -> tuple[int, str, Path]:
    """The role's template rendered by Ansible; `api`: the peers and the router's ports' inputs (their role
    defaults where not given)."""
    dest = tmp_path / "firewall.nft"
    inputs = {"peers": [], "api_ports": [], "api_gateway_only": False, "api_networks": []} | api
    play = {
        "name": "Render the firewall rules",
        "hosts": "server",
        "gather_facts": False,
        "vars": {
            "llmrig_firewall_allowed_networks": networks,
            "llmrig_firewall_ports": ports,
            **{f"llmrig_firewall_{name}": value for name, value in inputs.items()},
        },
        "tasks": [template_task("roles/llmrig_firewall/templates/etc/llmrig/firewall.nft.j2", dest)],
    }
    status, output = run_play(tmp_path, play, {"llm_servers": ["server"]})
    return status, output, dest


@pytest.mark.parametrize("networks", [["192.168.1.0/24", "fd00::/8"], []])
def test_the_rules_render_and_nft_accepts_them(tmp_path, networks):
    status, output, dest = render(tmp_path, networks, [8080, 9100, 8080, 9090])
    assert status == 0, output
    rules = dest.read_text()
    assert "tcp dport != { 8080, 9090, 9100 } accept" in rules
    assert ("elements = { 192.168.1.0/24 }" in rules) == bool(networks)
    assert "meta l4proto tcp counter reject with tcp reset" in rules
    nft_accepts(dest)


def nft_accepts(dest: Path) -> None:
    assert shutil.which("nft"), "nft is missing: make setup installs nftables"
    check = subprocess.run(["nft", "--check", "--file", str(dest)], capture_output=True, text=True)
    if "Operation not permitted" in check.stderr:
        pytest.skip("nft --check needs CAP_NET_ADMIN")
    assert check.returncode == 0, check.stderr


def test_with_a_gateway_elsewhere_the_routers_ports_answer_only_it_and_the_monitoring_host(tmp_path):
    status, output, dest = render(
        tmp_path,
        ["192.168.1.0/24"],
        [8080, 8443, 9100],
        peers=["192.168.1.7", "fd00::7"],
        api_ports=[8443, 8080],
        api_gateway_only=True,
        api_networks=["192.168.1.50/32"],
    )
    assert status == 0, output
    rules = dest.read_text()
    # peers first, then the router's ports closed to everyone else, then the LAN for the other ports
    order = [
        "ip saddr @peers_ipv4 accept",
        "tcp dport { 8080, 8443 } ip saddr @api_ipv4 accept",
        "tcp dport { 8080, 8443 } counter reject with tcp reset",
        "ip saddr @allowed_ipv4 accept",
    ]
    assert [rules.index(line) for line in order] == sorted(rules.index(line) for line in order), rules
    assert "elements = { 192.168.1.7/32 }" in rules and "elements = { fd00::7/128 }" in rules
    assert "elements = { 192.168.1.50/32 }" in rules
    nft_accepts(dest)
    # without a gateway elsewhere the router's ports follow the allowed networks like the others
    status, output, dest = render(tmp_path, ["192.168.1.0/24"], [8080], peers=["192.168.1.7"], api_ports=[8080])
    assert status == 0 and "reject with tcp reset" in dest.read_text()
    assert "tcp dport { 8080 } counter reject" not in dest.read_text()


def test_peer_addresses_come_from_the_hosts_facts_and_missing_facts_are_named():
    hostvars = {
        "gw": {
            "ansible_facts": {
                "all_ipv4_addresses": ["10.0.0.5", "10.0.0.5"],
                "all_ipv6_addresses": ["fe80::1", "fd00::5"],
            }
        },
        "mon": {"ansible_facts": {"all_ipv4_addresses": ["10.0.0.6"]}},
        "bare": {"ansible_facts": {}},
    }
    assert host_addresses(["gw", "mon"], hostvars) == ["10.0.0.5", "fd00::5", "10.0.0.6"]
    with pytest.raises(AnsibleFilterError, match="no network facts of host 'bare'"):
        host_addresses(["gw", "bare"], hostvars)


def test_a_bad_network_stops_the_render(tmp_path):
    status, output, dest = render(tmp_path, ["192.168.1.5/24"], [8080])
    assert status != 0
    assert "llmrig_firewall_allowed_networks: '192.168.1.5/24' is not a network in CIDR form" in output
    assert not dest.exists()
