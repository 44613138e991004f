#!/usr/bin/env python3
"""Keep role READMEs and defaults in step with meta/argument_specs.yml.

For every role: the keys of defaults/main.yml must equal the spec options that are not required, each
spec default must equal the value in defaults/main.yml (an option without a default there is null), and
the README's "Role Variables" table (between the BEGIN/END markers) is generated from the spec.
`--check` fails on any difference; without it the tables are rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- BEGIN_ANSIBLE_DOCS -->"
END = "<!-- END_ANSIBLE_DOCS -->"


def table(options: dict) -> str:
    lines = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, spec in options.items():
        default = "(required)" if spec.get("required") else f"`{spec.get('default')!r}`"
        kind = spec.get("type", "str") + (f" of {spec['elements']}" if "elements" in spec else "")
        description = spec.get("description", "")
        if isinstance(description, list):  # argument_specs allow a list of paragraphs
            description = " ".join(description)
        lines.append(f"| `{name}` | {kind} | {default} | {description} |")
    return "\n".join(lines)


def _documented_elsewhere(spec: dict, value: object) -> bool:
    """A templated default (a Jinja expression in defaults/main.yml) may be left out of the spec when the
    spec's description says what it defaults to; the spec then has no default at all."""
    return "default" not in spec and isinstance(value, str) and "{{" in value


def check_role(role: Path, write: bool) -> list[str]:
    errors = []
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    optional = {name for name, spec in options.items() if not spec.get("required")}
    if set(defaults) != optional:
        errors.append(
            f"{role.name}: defaults/main.yml and argument_specs differ: "
            f"only in defaults {sorted(set(defaults) - optional)}, only in spec {sorted(optional - set(defaults))}"
        )
    for name in sorted(optional & set(defaults)):
        spec_default = options[name].get("default")
        if spec_default != defaults[name] and not _documented_elsewhere(options[name], defaults[name]):
            errors.append(
                f"{role.name}: {name}: argument_specs default {spec_default!r} differs from defaults/main.yml "
                f"{defaults[name]!r}"
            )
    readme = role / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN not in text or END not in text:
        return [*errors, f"{role.name}: README.md lacks the {BEGIN} / {END} markers"]
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table(options)}\n{END}{tail}"
    if new != text:
        if write:
            readme.write_text(new)
        else:
            errors.append(f"{role.name}: README variables table is stale: run scripts/role_docs.py")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    opts = parser.parse_args()
    errors = []
    for role in sorted(Path("roles").iterdir()):
        errors += check_role(role, write=not opts.check)
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
