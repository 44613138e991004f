"""The host firewall: the networks filter, and the rules file rendered by Ansible from the role's template
and checked by nft itself (nft --check needs CAP_NET_ADMIN: root here and in CI)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.network import firewall_networks
from test_playbooks import REPO, run_play


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


def render(tmp_path: Path, networks: list[str], ports: list[int]) -> tuple[int, str, Path]:
    dest = tmp_path / "firewall.nft"
    play = {
        "name": "Render the firewall rules",
        "hosts": "server",
        "gather_facts": False,
        "vars": {"llmrig_firewall_allowed_networks": networks, "llmrig_firewall_ports": ports},
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.template": {
                    "src": str(REPO / "roles/llmrig_firewall/templates/etc/llmrig/firewall.nft.j2"),
                    "dest": str(dest),
                    "mode": "0644",
                },
            }
        ],
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
    assert shutil.which("nft"), "nft is missing: make setup installs nftables"
    check = subprocess.run(["nft", "--check", "--file", str(dest)], capture_output=True, text=True)
    if "Operation not permitted" in check.stderr:
        pytest.skip("nft --check needs CAP_NET_ADMIN")
    assert check.returncode == 0, check.stderr


def test_a_bad_network_stops_the_render(tmp_path):
    status, output, dest = render(tmp_path, ["192.168.1.5/24"], [8080])
    assert status != 0
    assert "llmrig_firewall_allowed_networks: '192.168.1.5/24' is not a network in CIDR form" in output
    assert not dest.exists()
