"""The playbooks' and roles' wiring, run for real by Ansible on the controller (connection local): how a
host reaches its own endpoint, which hosts get the gateway exporter and the reboot report, and the presets
template rendered from a resolved fleet."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEY = "unit-test-key-0123456789"


def ansible(tmp_path: Path, command: list[str], groups: dict[str, list[str]], host_vars: dict | None = None):
    """Run an ansible command against a throw-away inventory with the repository's group_vars; every host
    is local. Returns (exit status, stdout + stderr)."""
    inventory = tmp_path / "inventory"
    inventory.mkdir(exist_ok=True)
    if not (inventory / "group_vars").exists():
        (inventory / "group_vars").symlink_to(REPO / "group_vars")
    hosts = {host for members in groups.values() for host in members}
    data = {
        "all": {
            "hosts": {
                host: {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "vault_llmrig_api_key": KEY,
                    **(host_vars or {}).get(host, {}),
                }
                for host in sorted(hosts)
            },
            "children": {group: {"hosts": {host: None for host in members}} for group, members in groups.items()},
        }
    }
    (inventory / "hosts.yml").write_text(json.dumps(data))
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json"
    )
    result = subprocess.run(
        [*command, "-i", str(inventory)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    return result.returncode, result.stdout + result.stderr


def host_var(tmp_path: Path, groups: dict, host: str, name: str, host_vars: dict | None = None):
    status, output = ansible(
        tmp_path, ["ansible", host, "-m", "ansible.builtin.debug", "-a", f"var={name}"], groups, host_vars
    )
    assert status == 0, output
    return json.loads(output.split("=>", 1)[1])[name]


# Bug 4: an IPv6 bind address made the health check, the presets reload and the exporters call
# http://::1:8080, which is no URL.
@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("::1", "http://[::1]:8080"),
        ("::", "http://[::1]:8080"),
        ("fd00::5", "http://[fd00::5]:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("192.0.2.7", "http://192.0.2.7:8080"),
    ],
)
def test_the_host_reaches_its_own_endpoint_for_every_bind_address(tmp_path, bind, url):
    groups = {"llm_servers": ["server"]}
    exporter = host_var(
        tmp_path, groups, "server", "llmrig_monitoring_exporters_gateway_url", {"server": {"llmrig_gateway_host": bind}}
    )
    assert exporter == url
    playbook = tmp_path / "gateway-url.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "The gateway role's own URL",
                    "hosts": "server",
                    "gather_facts": False,
                    "vars_files": [str(REPO / "roles/llmrig_gateway/vars/main.yml")],
                    "tasks": [
                        {"name": "Show", "ansible.builtin.debug": {"msg": "URL={{ _llmrig_gateway_local_url }}"}}
                    ],
                }
            ]
        )
    )
    status, output = ansible(
        tmp_path, ["ansible-playbook", str(playbook)], groups, {"server": {"llmrig_gateway_host": bind}}
    )
    assert status == 0, output
    assert f"URL={url}" in output


# Bug 5: monitoring.yml put the gateway exporter (which waits for a router) on GPU hosts that do not serve.
def test_only_inference_hosts_get_the_gateway_exporter(tmp_path):
    groups = {"llm_servers": ["server"], "nvidia_gpus": ["server", "gpu-only"], "monitoring": ["server"]}
    assert host_var(tmp_path, groups, "server", "llmrig_monitoring_exporters_gateway_exporter") is True
    assert host_var(tmp_path, groups, "gpu-only", "llmrig_monitoring_exporters_gateway_exporter") is False


# Bug 5: report.yml ran on llm_servers while the reboot fact is set on the nvidia_gpus hosts, so a GPU host
# that does not serve was never reported.
def test_the_reboot_report_covers_gpu_hosts_that_do_not_serve(tmp_path):
    groups = {"llm_servers": ["server"], "nvidia_gpus": ["gpu-only"]}
    status, output = ansible(
        tmp_path,
        ["ansible-playbook", str(REPO / "playbooks/report.yml")],
        groups,
        {"gpu-only": {"llmrig_nvidia_driver_reboot_required": True}},
    )
    assert status == 0, output
    assert "gpu-only needs a reboot to load the new NVIDIA driver" in output


def render_presets(tmp_path: Path, global_options: dict) -> tuple[int, str]:
    """Resolve a small fleet with the planner role (validation only: nothing to plan for) and render the
    gateway's presets template from it, as the role does."""
    fleet = [
        {"name": "a", "aliases": ["alpha"], "source": {"url": "https://models.example/a.gguf", "sha256": "1" * 64},
         "context": 4096, "cache_type_k": "q8_0", "sampling": {"temperature": 0.5}, "load_on_startup": True},
        {"name": "b", "source": {"url": "https://models.example/b.gguf", "sha256": "2" * 64}, "context": 8192},
    ]  # fmt: skip
    playbook = tmp_path / "presets.yml"
    tasks = [
        {"name": "Resolve", "ansible.builtin.include_role": {"name": "llmrig_planner"}},
        {
            "name": "Render",
            "ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '" + str(REPO) + "/roles/llmrig_gateway/templates/"
                "etc/llmrig/presets.ini.j2', template_vars={'ansible_managed': 'managed'}) }}",
                "dest": str(tmp_path / "presets.ini"),
                "mode": "0644",
            },
        },
    ]
    play = {
        "name": "Presets from the resolved fleet",
        "hosts": "server",
        "gather_facts": False,
        "vars_files": [str(REPO / "roles/llmrig_gateway/vars/main.yml")],
        "vars": {
            "llmrig_fleet": fleet,
            "llmrig_planner_detect_gpus": False,
            "llmrig_gateway_global_options": global_options,
            "llmrig_gateway_stop_timeout": 10,
            "llmrig_gateway_models_max": None,
        },
        "tasks": tasks,
    }  # fmt: skip
    playbook.write_text(json.dumps([play]))
    return ansible(tmp_path, ["ansible-playbook", str(playbook)], {"llm_servers": ["server"]})


def test_presets_template_renders_the_resolved_fleet(tmp_path):
    status, output = render_presets(tmp_path, {"threads": 4})
    assert status == 0, output
    assert (tmp_path / "presets.ini").read_text() == (
        ";\n; managed\n;\n"
        "; Rendered from the resolved fleet (llmrig_planner_plan): the first section is for every model, then one per"
        " model.\n"
        "version = 1\n\n[*]\nstop-timeout = 10\nthreads = 4\n\n"
        "[a]\nmodel = /var/lib/llmrig/models/a.gguf\nalias = alpha\nctx-size = 4096\ncache-type-k = q8_0\n"
        "temp = 0.5\nload-on-startup = true\n\n"
        "[b]\nmodel = /var/lib/llmrig/models/b.gguf\nctx-size = 8192\n"
    )


# Bug 6: the [*] section took any option, even the gateway's own or one with an INI comment character.
def test_presets_template_refuses_a_reserved_global_option(tmp_path):
    status, output = render_presets(tmp_path, {"port": 9000})
    assert status != 0
    assert "llmrig_gateway_global_options: option 'port': is managed by the gateway (llmrig_gateway_port)" in output
    assert not (tmp_path / "presets.ini").exists()
