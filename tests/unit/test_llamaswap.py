"""llama-swap's config.yaml rendered from the resolved fleet (module_utils/_llamaswap.py), and the project's own
check of a config against the keys and types llama-swap documents. The llama-swap binary cannot be fetched
on these machines, so nothing here starts it: the rendering of the example fleet (planned for the reference
rig) and of the test fleet (planned on host RAM) must pass the check, and the check must catch what
llama-swap's loader would refuse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import llmrig_testlib
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.llamaswap import llamaswap_config
from ansible_collections.llmrig.serving.plugins.module_utils._llamaswap import check, render
from test_example_fleet import example_fleet  # noqa: F401 (the fixture: the example fleet on shape files)
from test_playbooks import run_play, template_task

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {
    "binary": "/opt/llmrig/llama.cpp/current/bin/llama-server",
    "host": "127.0.0.1",
    "api_key_file": "/etc/llmrig/api-key",
    "health_check_timeout": 600,
    "unload_timeout": 10,
    "ttl": 0,
    "start_port": 5800,
    "api_key_env": "LLMRIG_API_KEY",
}


CACHE: list[Path] = []  # GGUF metadata parsed once per run (by sha256), as the planner role keeps it


@pytest.fixture(autouse=True, scope="module")
def metadata_cache(tmp_path_factory):
    CACHE[:] = [tmp_path_factory.mktemp("planner-cache")]


def resolve(tmp_path: Path, fleet: list[dict], gpus: list[dict], cache: bool = True) -> dict:
    """The planner's result for the fleet (the example's shape files share one made-up sha256: no cache)."""
    result = llmrig_testlib.run_module(
        "fleet_plan",
        tmp_path,
        fleet=fleet,
        models_dir="/var/lib/llmrig/models",
        gpus=gpus,
        host_ram_mib=65536,
        **({"cache_dir": str(CACHE[0])} if cache else {}),
    )
    assert not result.get("failed"), result.get("msg")
    return {key: result[key] for key in ("fleet", "presets", "names", "plan")}


def test_fleet() -> list[dict]:
    text = (REPO / "group_vars" / "llmrig_test.yml").read_text()
    settings = yaml.safe_load(text)
    text = text.replace("{{ llmrig_test_cache_dir }}", str(REPO / ".cache"))
    text = text.replace("{{ llmrig_test_model_sha256 }}", settings["llmrig_test_model_sha256"])
    return yaml.safe_load(text)["llmrig_fleet"]


test_fleet.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def test_the_example_fleet_renders_a_config_that_passes_the_check(example_fleet, tmp_path):  # noqa: F811
    gpus = yaml.safe_load((REPO / "group_vars" / "nvidia_gpus.yml").read_text())["llmrig_planner_gpus"]
    resolved = resolve(tmp_path, example_fleet, gpus, cache=False)
    config = llamaswap_config(resolved, SETTINGS)
    assert check(config) == []
    print("\n" + yaml.safe_dump(config, sort_keys=False))
    assert list(config["models"]) == ["qwen3.6-27b", "qwen3.6-35b-a3b", "gemma-4-31b-vision"]
    qwen = config["models"]["qwen3.6-27b"]
    assert qwen["aliases"] == ["qwen-coder"] and qwen["checkEndpoint"] == "/health"
    binary = "/opt/llmrig/llama.cpp/current/bin/llama-server"
    assert qwen["cmd"].startswith(f"{binary} --host 127.0.0.1 --port ${{PORT}} --api-key-file /etc/llmrig/api-key")
    assert "--spec-type draft-mtp" in qwen["cmd"] and "--tensor-split 1,1" in qwen["cmd"]
    assert "--alias" not in qwen["cmd"] and "--load-on-startup" not in qwen["cmd"]
    assert qwen["capabilities"] == {"in": ["text"], "out": ["text"], "context": 131072}
    assert config["models"]["gemma-4-31b-vision"]["capabilities"]["in"] == ["text", "image"]
    assert (
        "--mmproj /var/lib/llmrig/models/mmproj-gemma-4-31B-it-F16.gguf"
        in config["models"]["gemma-4-31b-vision"]["cmd"]
    )
    # one of these fills both 16 GB cards: the planner lets no two be resident, so one group swaps them
    assert config["routing"] == {
        "router": {
            "use": "group",
            "settings": {
                "groups": {
                    "fleet": {"swap": True, "exclusive": True, "persistent": False, "members": list(config["models"])}
                }
            },
        }
    }
    assert config["hooks"] == {"on_startup": {"preload": ["qwen3.6-27b"]}}
    # the clients' key stays out of the file: llama-swap reads it from the unit's environment
    assert config["apiKeys"] == ["${env.LLMRIG_API_KEY}"]


def test_the_test_fleet_renders_a_matrix_from_the_pairs_that_fit(tmp_path):
    resolved = resolve(tmp_path, test_fleet(), [{"name": "host RAM", "memory_mib": 16384, "host_memory": True}])
    config = llamaswap_config(resolved, SETTINGS)
    assert check(config) == []
    assert list(config["models"]) == resolved["names"]
    matrix = config["routing"]["router"]["settings"]["matrix"]
    assert config["routing"]["router"]["use"] == "matrix"
    assert list(matrix["vars"].values()) == resolved["names"]
    pairs = [set(expression.split(" & ")) for expression in matrix["sets"].values()]
    assert len(pairs) == len(resolved["plan"]["pairs_that_fit"]) > 0
    assert {frozenset(matrix["vars"][v] for v in pair) for pair in pairs} == {
        frozenset(pair) for pair in resolved["plan"]["pairs_that_fit"]
    }
    # sampling and extra options become llama-server's own flags; booleans true are bare flags
    assert "--temp 0.0" in config["models"]["gemma-a"]["cmd"]
    assert config["models"]["gemma-a"]["aliases"] == ["gemma-small"]


def test_an_unplanned_fleet_swaps_one_model_at_a_time(tmp_path):
    resolved = resolve(tmp_path, test_fleet(), [])
    config = render(resolved, SETTINGS)
    assert resolved["plan"] is None and config["routing"]["router"]["use"] == "group"
    assert "context" not in config["models"]["gemma-a"]["capabilities"] and check(config) == []


DOCUMENTED = {
    # the forms llama-swap's configuration reference shows, which the check must accept
    "healthCheckTimeout": 500,
    "logLevel": "info",
    "logTimeFormat": "",
    "logToStdout": "proxy",
    "metricsMaxInMemory": 1000,
    "captureBuffer": 15,
    "startPort": 10001,
    "sendLoadingState": True,
    "includeAliasesInList": False,
    "globalTTL": 0,
    "macros": {"latest-llama": "/bin/llama-server --port ${PORT}", "default_ctx": 4096, "models_dir": "${env.HOME}/m"},
    "apiKeys": ["sk-one", "${env.API_KEY_1}"],
    "models": {
        "big": {
            "macros": {"temp": 0.7},
            "cmd": "${latest-llama}\n--model big.gguf\n",
            "name": "Big",
            "description": "a model",
            "env": ["CUDA_VISIBLE_DEVICES=0,1"],
            "proxy": "http://127.0.0.1:8999",
            "checkEndpoint": "/custom",
            "ttl": 60,
            "useModelName": "org/big",
            "filters": {
                "stripParams": "temperature, top_p",
                "setParams": {"top_p": 0.9},
                "setParamsByID": {"${MODEL_ID}:high": {"x": 1}},
            },
            "aliases": [{"id": "gpt-4o-mini", "name": "gpt-4o-mini", "unlisted": False}],
            "metadata": {"port": "${PORT}", "a_list": [1, 1.5]},
            "concurrencyLimit": 0,
            "sendLoadingState": False,
            "timeouts": {"connect": 30, "keepalive": 0, "responseHeader": 60, "tlsHandshake": 10, "idleConn": 90},
        },
        "small": {"cmd": "llama-server --port ${PORT}", "unlisted": True, "aliases": ["tiny"]},
        "tts": {"cmd": "tts --port ${PORT}", "cmdStop": "kill ${PID}"},
    },
    "routing": {
        "scheduler": {"use": "fifo", "settings": {"fifo": {"priority": {"big": 10}}}},
        "router": {
            "use": "matrix",
            "settings": {
                "matrix": {
                    "vars": {"b": "big", "s": "small", "t": "tts"},
                    "evict_costs": {"b": 30},
                    "sets": {"llms": "b | s", "voice": "+llms & t", "full": "b"},
                }
            },
        },
    },
    "hooks": {"on_startup": {"preload": ["small"]}},
    "peers": {
        "remote": {
            "proxy": "https://example.org/api",
            "apiKey": "${env.KEY}",
            "models": ["m1"],
            "filters": {"stripParams": "temperature"},
        }
    },
    "upstream": {"ignorePaths": ["^/metrics$"]},
    "performance": {"disabled": False, "every": "5s"},
    "store": {"path": "/var/lib/llama-swap/activity.db"},
}


def test_the_check_accepts_every_documented_form():
    assert check(DOCUMENTED) == []


def broken(change) -> dict:
    config = copy.deepcopy(DOCUMENTED)
    change(config)
    return config


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c.pop("models"), "(top): 'models' is required"),
        (lambda c: c.update(healthCheckTimeout=10), "healthCheckTimeout: must be at least 15, got 10"),
        (
            lambda c: c.update(logLevel="verbose"),
            "logLevel: must be one of 'debug', 'info', 'warn', 'error', got 'verbose'",
        ),
        (lambda c: c.update(modelz={}), "(top): unknown key 'modelz'"),
        (lambda c: c["models"]["small"].pop("cmd"), "models.small: 'cmd' is required"),
        (lambda c: c["models"]["small"].update(ttl="1h"), "models.small.ttl: must be an integer, got '1h'"),
        (lambda c: c["models"]["small"].update(ttl=-2), "models.small.ttl: must be at least -1, got -2"),
        (
            lambda c: c["models"]["small"].update(checkEndpoint="health"),
            "models.small.checkEndpoint: 'health' does not match",
        ),
        (lambda c: c["models"]["small"].update(env=["lower=1"]), "models.small.env[0]: 'lower=1' does not match"),
        (lambda c: c["models"]["small"].update(ctx=4096), "models.small: unknown key 'ctx'"),
        (
            lambda c: c["models"]["small"].update(aliases=["big"]),
            "models.small.aliases: 'big' is already the id or an alias of big",
        ),
        (
            lambda c: c["models"]["tts"].update(aliases=["tiny"]),
            "models.tts.aliases: 'tiny' is already the id or an alias of small",
        ),
        (lambda c: c["models"]["small"].update(aliases=[{"name": "x"}]), "models.small.aliases[0]: must be a string"),
        (lambda c: c["macros"].update(PORT=1), "macros: 'PORT' is not a macro name llama-swap accepts"),
        (
            lambda c: c["hooks"]["on_startup"].update(preload=["gone"]),
            "hooks.on_startup.preload: 'gone' is not a model id",
        ),
        (
            lambda c: c.update(groups={"g": {"members": ["big"]}}),
            "routing: a config uses the routing block or the top-level",
        ),
        (
            lambda c: c["routing"]["router"]["settings"]["matrix"]["sets"].update(x="b & q"),
            "routing.router.settings.matrix.sets.x: 'q' is not a variable of vars",
        ),
        (
            lambda c: c["routing"]["router"]["settings"]["matrix"]["sets"].update(x="+none & b"),
            "routing.router.settings.matrix.sets.x: '+none' names no set",
        ),
        (
            lambda c: c["routing"]["router"]["settings"]["matrix"]["vars"].update(toolongname="big"),
            "routing.router.settings.matrix.vars: 'toolongname' must be 1 to 8 letters or digits",
        ),
        (
            lambda c: c["routing"]["scheduler"]["settings"]["fifo"]["priority"].update(gone=1),
            "routing.scheduler.settings.fifo.priority: 'gone' is not a model id",
        ),
        (
            lambda c: c["routing"].update(
                router={
                    "use": "group",
                    "settings": {"groups": {"a": {"members": ["big"]}, "b": {"members": ["big", "x"]}}},
                }
            ),
            "routing.router.settings.groups.b.members: 'big' is already in group a",
        ),
        (lambda c: c["performance"].update(every="5 seconds"), "performance.every: '5 seconds' does not match"),
        (lambda c: c["peers"]["remote"].pop("models"), "peers.remote: 'models' is required"),
    ],
)
def test_the_check_names_what_llama_swap_would_refuse(change, error):
    errors = check(broken(change))
    assert any(e.startswith(error) for e in errors), errors


def test_a_rendered_config_that_departs_fails_the_filter_naming_the_key(tmp_path):
    resolved = resolve(tmp_path, test_fleet(), [])
    with pytest.raises(AnsibleFilterError, match=r"healthCheckTimeout: must be an integer, got '600'"):
        llamaswap_config(resolved, {**SETTINGS, "health_check_timeout": "600", "start_port": 5800})


def role_play(tmp_path: Path, resolved: dict, tasks: list[dict], **inputs: Any) -> tuple[int, str]:
    """A play on a local host with the gateway role's defaults and vars and the repository's group_vars,
    running `tasks` (the role's own task files or templates) for the resolved fleet."""
    role = REPO / "roles/llmrig_gateway"
    play = {
        "name": "llama-swap through the gateway role's own inputs",
        "hosts": "server",
        "gather_facts": False,
        "vars_files": [str(role / "vars/main.yml")],
        # the defaults as play vars, so that the inputs given here win over them as they would
        "vars": yaml.safe_load((role / "defaults/main.yml").read_text())
        | {"llmrig_planner_plan": {"models_max": 1, "fit": False} | resolved, "llmrig_gateway_backend": "llama-swap"}
        | inputs,
        "tasks": tasks,
    }
    return run_play(tmp_path, play, {"llm_servers": ["server"]})


def test_the_role_renders_the_config_and_unit_from_its_own_settings(tmp_path):
    resolved = resolve(tmp_path, test_fleet(), [])
    pin = {"llmrig_gateway_llamaswap_version": "250", "llmrig_gateway_llamaswap_sha256": "ab" * 32}
    config, unit = tmp_path / "llama-swap.yaml", tmp_path / "llmrig-gateway.service"
    render_config = {
        "name": "Render the config as the role does",
        "ansible.builtin.copy": {
            "content": "{{ llmrig_planner_plan | llmrig.serving.llamaswap_config(_llmrig_gateway_llamaswap_settings)"
            " | to_nice_yaml(indent=2, width=200) }}",
            "dest": str(config),
            "mode": "0644",
        },
    }
    render_unit = template_task(
        "roles/llmrig_gateway/templates/etc/systemd/system/llmrig-gateway-llamaswap.service.j2", unit
    )
    preflight = {
        "name": "Preflight",
        "ansible.builtin.include_tasks": str(REPO / "roles/llmrig_gateway/tasks/preflight.yml"),
    }
    status, output = role_play(tmp_path, resolved, [render_config, render_unit], **pin)
    assert status == 0, output
    rendered = yaml.safe_load(config.read_text())
    assert check(rendered) == []
    assert set(rendered["models"]) == set(resolved["names"]) - {a for e in resolved["fleet"] for a in e["aliases"]}
    assert rendered["healthCheckTimeout"] == 600 and rendered["startPort"] == 5800
    assert rendered["apiKeys"] == ["${env.LLMRIG_API_KEY}"]
    text = unit.read_text()
    assert "ExecStart=/opt/llmrig/llama-swap/250/llama-swap --config /etc/llmrig/llama-swap.yaml" in text, text
    assert "--listen 127.0.0.1:8080 --watch-config" in text
    assert "EnvironmentFile=/etc/llmrig/llama-swap.env" in text
    # without the pin the preflight stops, naming both inputs
    status, output = role_play(tmp_path, resolved, [preflight], llmrig_gateway_api_key="k" * 20)
    assert status != 0
    assert "set llmrig_gateway_llamaswap_version" in output and "llmrig_gateway_llamaswap_sha256" in output, output
