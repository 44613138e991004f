# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the llama-server presets template (roles/llmrig_gateway/templates/etc/llmrig/presets.ini.j2)."""

from __future__ import annotations

import configparser
import posixpath
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import (
    GlobalOptionError,
    check_global_options,
    ini_value,
)


def preset_value(value: Any) -> str:
    """One preset value as llama-server's INI parser reads it."""
    try:
        return ini_value(value)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def preset_global_options(options: Any, variable: str = "llmrig_gateway_global_options") -> dict:
    """The options of the presets' [*] section, checked as a fleet entry's extra_args are."""
    try:
        return check_global_options(options, variable)
    except GlobalOptionError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def presets_using(presets: list[dict], files: list[str]) -> list[str]:
    """Names of the models whose preset reads one of these files (model, projector or draft model)."""
    if isinstance(files, str):
        raise AnsibleFilterError(f"presets_using wants a list of file names, not the string {files!r}")
    wanted = set(files)
    return [
        preset["name"]
        for preset in presets
        if any(isinstance(value, str) and posixpath.basename(value) in wanted for _, value in preset["options"])
    ]


def _preset_sections(text: str) -> dict[str, dict[str, str]]:
    """Each model's options as llama-server reads a presets file: its own section over [*]."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"), strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # option names are case-sensitive
    parser.read_string("[llmrig:top]\n" + (text or ""))
    shared = dict(parser["*"]) if parser.has_section("*") else {}
    return {name: {**shared, **dict(parser[name])} for name in parser.sections() if name not in ("*", "llmrig:top")}


def presets_changed(old_text: str, new_text: str) -> list[str]:
    """Models of the old presets file that the new one changes or removes (the router's reload stops them)."""
    old, new = _preset_sections(old_text), _preset_sections(new_text)
    return [name for name, options in old.items() if new.get(name) != options]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "preset_value": preset_value,
            "preset_global_options": preset_global_options,
            "presets_using": presets_using,
            "presets_changed": presets_changed,
        }
