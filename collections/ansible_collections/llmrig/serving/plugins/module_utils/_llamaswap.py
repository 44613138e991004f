# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""llama-swap as the front of one host (llmrig_gateway_backend: llama-swap): its config.yaml rendered from the
resolved fleet, and this project's own check of a config against the keys and types llama-swap documents.

The check is written from llama-swap's configuration reference (its config.example.yaml and the JSON schema
in its repository, as of the v250 era with the `routing:` block): every documented key with its type, range,
pattern or choices, unknown keys refused, and the cross-references the schema cannot express (group members,
matrix variables, preloads and priorities that name models; aliases unique). The llama-swap binary itself
cannot be fetched on this project's machines, so the rendered file is checked here, not loaded by llama-swap.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ansible_collections.llmrig.serving.plugins.module_utils._fleet import _is_int, ini_value

# llama-swap's own keys for what the router's presets say with these options
ROUTER_ONLY_OPTIONS = ("alias", "load-on-startup")
DURATION = r"^[-+]?(\d+(\.\d+)?(ns|us|ms|s|m|h))+$"
MACRO_NAME = r"^[a-zA-Z0-9_-]{1,63}$"
MACRO_RESERVED = ("PORT", "MODEL_ID", "PID")

# A small description language for the documented keys:
#   ("int", minimum) | ("str", pattern or None) | ("enum", choices) | ("bool",) | ("any",)
#   ("list", item) | ("map", value) (any keys) | ("object", {key: spec}, required keys)
_INT = ("int", None)
_STR = ("str", None)
_NONEMPTY = ("str", r"^[\s\S]+$")
_BOOL = ("bool",)
_URL = ("str", r"^https?://\S+$")
_STRIP_PARAMS = ("str", r"^[a-zA-Z0-9_, ]*$")
_MACROS = ("map", ("scalar",))
_TIMEOUTS = (
    "object",
    {
        key: ("int", 0)
        for key in ("connect", "keepalive", "responseHeader", "tlsHandshake", "expectContinue", "idleConn")
    },
    (),
)
_GROUPS = (
    "map",
    ("object", {"swap": _BOOL, "exclusive": _BOOL, "persistent": _BOOL, "members": ("list", _STR)}, ("members",)),
)
_MATRIX = (
    "object",
    {
        "vars": ("map", _STR),
        "evict_costs": ("map", ("int", 1)),
        "sets": ("map", _STR),
    },
    ("vars", "sets"),
)
_MODALITIES = ("list", ("enum", ("text", "audio", "image")))
_MODEL = (
    "object",
    {
        "macros": _MACROS,
        "cmd": _NONEMPTY,
        "cmdStop": _STR,
        "name": ("str", r"^.{0,128}$"),
        "description": ("str", r"^(.|\n){0,1024}$"),
        "env": ("list", ("str", r"^[A-Z_][A-Z0-9_]*=.*$")),
        "proxy": _URL,
        # a name, or (newer releases' example) {id, name, unlisted}
        "aliases": (
            "list",
            ("oneof", (_NONEMPTY, ("object", {"id": _NONEMPTY, "name": _STR, "unlisted": _BOOL}, ("id",)))),
        ),
        "checkEndpoint": ("str", r"^/.*$|^none$"),
        "ttl": ("int", -1),
        "unloadTimeout": ("int", 0),
        "useModelName": _STR,
        "filters": (
            "object",
            {
                "stripParams": _STRIP_PARAMS,
                "setParams": ("map", ("any",)),
                "setParamsByID": ("map", ("map", ("any",))),
            },
            (),
        ),
        "metadata": ("map", ("any",)),
        "concurrencyLimit": ("int", 0),
        "sendLoadingState": _BOOL,
        "unlisted": _BOOL,
        "timeouts": _TIMEOUTS,
        "capabilities": (
            "object",
            {"in": _MODALITIES, "out": _MODALITIES, "tools": _BOOL, "reranker": _BOOL, "context": ("int", 0)},
            (),
        ),
        "healthCheckTimeout": ("int", 15),
    },
    ("cmd",),
)
CONFIG = (
    "object",
    {
        "healthCheckTimeout": ("int", 15),
        "globalTTL": ("int", 0),
        "unloadTimeout": ("int", 0),
        "logLevel": ("enum", ("debug", "info", "warn", "error")),
        "logTimeFormat": (
            "enum",
            (
                "",
                "ansic",
                "unixdate",
                "rubydate",
                "rfc822",
                "rfc822z",
                "rfc850",
                "rfc1123",
                "rfc1123z",
                "rfc3339",
                "rfc3339nano",
                "kitchen",
                "stamp",
                "stampmilli",
                "stampmicro",
                "stampnano",
            ),
        ),
        "logToStdout": ("enum", ("proxy", "upstream", "both", "none")),
        "logRequests": _BOOL,
        "metricsMaxInMemory": _INT,
        "captureBuffer": ("int", 0),
        "store": ("object", {"path": _NONEMPTY}, ("path",)),
        "ui": ("object", {"activity": ("object", {"session_id": ("list", _STR)}, ())}, ()),
        "performance": ("object", {"disabled": _BOOL, "every": ("str", DURATION)}, ()),
        "startPort": _INT,
        "sendLoadingState": _BOOL,
        "includeAliasesInList": _BOOL,
        "macros": _MACROS,
        "profiles": ("map", ("object", {"description": _STR, "pins": ("map", ("str-or-null",))}, ("pins",))),
        "models": ("map", _MODEL),
        "groups": _GROUPS,
        "matrix": _MATRIX,
        "hooks": ("object", {"on_startup": ("object", {"preload": ("list", _STR)}, ())}, ()),
        "apiKeys": ("list", _NONEMPTY),
        "peers": (
            "map",
            (
                "object",
                {
                    "proxy": _URL,
                    "apiKey": _STR,
                    "models": ("list", _NONEMPTY),
                    "filters": (
                        "object",
                        {"stripParams": _STRIP_PARAMS, "setParams": ("map", ("any",))},
                        (),
                    ),
                    "timeouts": _TIMEOUTS,
                },
                ("proxy", "models"),
            ),
        ),
        "upstream": ("object", {"ignorePaths": ("list", _STR)}, ()),
        "routing": (
            "object",
            {
                "scheduler": (
                    "object",
                    {
                        "use": ("enum", ("fifo",)),
                        "settings": ("object", {"fifo": ("object", {"priority": ("map", _INT)}, ())}, ()),
                    },
                    (),
                ),
                "router": (
                    "object",
                    {
                        "use": ("enum", ("group", "matrix")),
                        "settings": ("object", {"groups": _GROUPS, "matrix": _MATRIX}, ()),
                    },
                    (),
                ),
            },
            (),
        ),
    },
    ("models",),
)


def _check(value: Any, spec: tuple, path: str, errors: list[str]) -> None:
    kind = spec[0]
    if kind == "any":
        return
    if kind == "oneof":
        attempts = []
        for option in spec[1]:
            found: list[str] = []
            _check(value, option, path, found)
            if not found:
                return
            attempts.append(found)
        errors.extend(attempts[0])
        return
    if kind == "int":
        if not _is_int(value):
            errors.append(f"{path}: must be an integer, got {value!r}")
        elif spec[1] is not None and value < spec[1]:
            errors.append(f"{path}: must be at least {spec[1]}, got {value}")
    elif kind == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: must be true or false, got {value!r}")
    elif kind in ("str", "str-or-null"):
        if kind == "str-or-null" and value is None:
            return
        if not isinstance(value, str):
            errors.append(f"{path}: must be a string, got {value!r}")
        elif len(spec) > 1 and spec[1] is not None and not re.match(spec[1], value):
            errors.append(f"{path}: {value!r} does not match {spec[1]}")
    elif kind == "scalar":
        if not isinstance(value, (str, int, float, bool)):
            errors.append(f"{path}: must be a string, number or boolean, got {value!r}")
    elif kind == "enum":
        if value not in spec[1]:
            errors.append(f"{path}: must be one of {', '.join(map(repr, spec[1]))}, got {value!r}")
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list, got {value!r}")
            return
        for index, item in enumerate(value):
            _check(item, spec[1], f"{path}[{index}]", errors)
    elif kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: must be a mapping, got {value!r}")
            return
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                errors.append(f"{path}: keys must be non-empty strings, got {key!r}")
                continue
            _check(item, spec[1], f"{path}.{key}", errors)
    elif kind == "object":
        if not isinstance(value, dict):
            errors.append(f"{path}: must be a mapping, got {value!r}")
            return
        keys, required = spec[1], spec[2]
        for key, item in value.items():
            if key not in keys:
                errors.append(f"{path or '(top)'}: unknown key {key!r}; llama-swap documents {', '.join(sorted(keys))}")
            else:
                _check(item, keys[key], f"{path}.{key}" if path else key, errors)
        errors.extend(f"{path or '(top)'}: {key!r} is required" for key in required if key not in value)


def _map(value: Any) -> dict:
    """A mapping where the types are right, else empty (the type check has said what is wrong)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _references(config: dict, errors: list[str]) -> None:
    """What the documented types leave to llama-swap's loader: names that must be models, unique aliases,
    one group per model, the routing block or the top-level groups/matrix, macro names."""
    models = _map(config.get("models"))
    owner: dict[str, str] = {model: model for model in models}
    for model, body in models.items():
        for item in _list(_map(body).get("aliases")):
            alias = _map(item).get("id") if isinstance(item, dict) else item
            if alias in owner:
                errors.append(f"models.{model}.aliases: {alias!r} is already the id or an alias of {owner[alias]}")
            owner[str(alias)] = model
    routing = _map(config.get("routing"))
    settings = _map(_map(routing.get("router")).get("settings"))
    if routing and ("groups" in config or "matrix" in config):
        errors.append("routing: a config uses the routing block or the top-level groups/matrix keys, not both")
    if "groups" in config and "matrix" in config:
        errors.append("(top): groups and matrix exclude each other")
    if _map(routing.get("router")).get("use") == "matrix" and "matrix" not in settings:
        errors.append("routing.router: use is matrix but settings.matrix is missing")
    for where, groups in (("groups", config.get("groups")), ("routing.router.settings.groups", settings.get("groups"))):
        member_of: dict[str, str] = {}
        for name, group in _map(groups).items():
            for member in _list(_map(group).get("members")):
                if member not in models:
                    errors.append(f"{where}.{name}.members: {member!r} is not a model id")
                elif member in member_of:
                    errors.append(f"{where}.{name}.members: {member!r} is already in group {member_of[member]}")
                member_of[member] = name
    for where, matrix in (("matrix", config.get("matrix")), ("routing.router.settings.matrix", settings.get("matrix"))):
        variables, sets = _map(_map(matrix).get("vars")), _map(_map(matrix).get("sets"))
        for var, model in variables.items():
            if not re.match(r"^[a-zA-Z0-9]{1,8}$", str(var)):
                errors.append(f"{where}.vars: {var!r} must be 1 to 8 letters or digits")
            if model not in models:
                errors.append(f"{where}.vars.{var}: {model!r} is not a model id")
        for name, expression in sets.items():
            for token in re.findall(r"\+?[a-zA-Z0-9_-]+", str(expression)):
                if token.startswith("+") and token[1:] not in sets:
                    errors.append(f"{where}.sets.{name}: {token!r} names no set")
                elif not token.startswith("+") and token not in variables:
                    errors.append(f"{where}.sets.{name}: {token!r} is not a variable of vars")
        for var in _map(_map(matrix).get("evict_costs")):
            if var not in variables:
                errors.append(f"{where}.evict_costs: {var!r} is not a variable of vars")
    for model in _list(_map(_map(config.get("hooks")).get("on_startup")).get("preload")):
        if model not in models:
            errors.append(f"hooks.on_startup.preload: {model!r} is not a model id")
    fifo = _map(_map(_map(routing.get("scheduler")).get("settings")).get("fifo"))
    for model in _map(fifo.get("priority")):
        if model not in models:
            errors.append(f"routing.scheduler.settings.fifo.priority: {model!r} is not a model id")
    scopes = [("macros", config.get("macros"))] + [
        (f"models.{m}.macros", _map(b).get("macros")) for m, b in models.items()
    ]
    for where, macros in scopes:
        for name in _map(macros):
            if not re.match(MACRO_NAME, str(name)) or name in MACRO_RESERVED:
                errors.append(f"{where}: {name!r} is not a macro name llama-swap accepts")


def check(config: Any) -> list[str]:
    """Every way `config` departs from llama-swap's documented configuration; empty when it conforms."""
    errors: list[str] = []
    _check(config, CONFIG, "", errors)
    if isinstance(config, dict):
        _references(config, errors)
    return errors


def command(binary: str, options: list, host: str, api_key_file: str) -> str:
    """One model's llama-server command line from its preset options (`--option value`; true: the bare flag,
    false: left out), on llama-swap's ${PORT}, with the key file so the process refuses requests without it."""
    parts = [shlex.quote(binary), "--host", shlex.quote(host), "--port", "${PORT}"]
    parts += ["--api-key-file", shlex.quote(api_key_file)]
    for option, value in options:
        if option in ROUTER_ONLY_OPTIONS or value is False:
            continue
        parts.append(f"--{option}")
        if value is not True:
            parts.append(shlex.quote(ini_value(value)))
    return " ".join(parts)


def routing(names: list[str], plan: dict | None) -> dict:
    """Which models may be resident together, from the planner: without a plan, or where no two fit, one group
    that swaps (one model at a time); where pairs fit, llama-swap's matrix with one set per pair that fits (a
    model in no set runs alone). Unplanned fleets get the group: nothing says two would fit."""
    pairs = [pair for pair in (plan or {}).get("pairs_that_fit", []) if set(pair) <= set(names)]
    if not pairs:
        group = {"swap": True, "exclusive": True, "persistent": False, "members": list(names)}
        return {"router": {"use": "group", "settings": {"groups": {"fleet": group}}}}
    var = {name: f"m{index + 1}" for index, name in enumerate(names)}
    sets = {f"pair{index + 1}": f"{var[a]} & {var[b]}" for index, (a, b) in enumerate(pairs)}
    matrix = {"vars": {v: name for name, v in var.items()}, "sets": sets}
    return {"router": {"use": "matrix", "settings": {"matrix": matrix}}}


def render(resolved: dict, settings: dict) -> dict:
    """llama-swap's config.yaml for the resolved fleet (llmrig_planner_plan). `settings`: binary, host,
    api_key_file, health_check_timeout, unload_timeout, ttl, start_port, api_key_env (the environment
    variable the unit sets to the clients' key; the key itself never enters the file)."""
    presets = {preset["name"]: preset["options"] for preset in resolved["presets"]}
    planned = {model["name"]: model for model in (resolved.get("plan") or {}).get("models", [])}
    models = {}
    for entry in resolved["fleet"]:
        name = entry["name"]
        model: dict[str, Any] = {
            "cmd": command(settings["binary"], presets[name], settings["host"], settings["api_key_file"]),
            "checkEndpoint": "/health",
            "ttl": settings["ttl"],
            "unloadTimeout": settings["unload_timeout"],
        }
        if entry["aliases"]:
            model["aliases"] = list(entry["aliases"])
        capabilities: dict[str, Any] = {"in": ["text", "image"] if "mmproj" in entry else ["text"], "out": ["text"]}
        if name in planned:
            capabilities["context"] = planned[name]["context"]
        model["capabilities"] = capabilities
        models[name] = model
    config: dict[str, Any] = {
        "healthCheckTimeout": settings["health_check_timeout"],
        "logToStdout": "both",
        "startPort": settings["start_port"],
        "apiKeys": ["${env." + settings["api_key_env"] + "}"],
        "models": models,
        "routing": routing(resolved["names"], resolved.get("plan")),
    }
    preload = [entry["name"] for entry in resolved["fleet"] if entry.get("load_on_startup")]
    if preload:
        config["hooks"] = {"on_startup": {"preload": preload}}
    return config
