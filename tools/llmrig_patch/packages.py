"""Installed packages as dpkg-query lists them, what changed between two lists, and which packages the
hold patterns cover.

The report is the difference of the installed versions before and after the upgrade, not a parse of apt's
plan: it says what happened, whatever apt decided. The plan (`apt-get -s` output) is parsed only to say in
advance what will change."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

# `dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\n'`: "ii  libc6 2.36-9+deb12u10"; status
# "hi" for a held package
INSTALLED = re.compile(r"^(?P<want>[uihrp])(?P<state>[ncHUFWti])\S*\s+(?P<name>\S+)\s+(?P<version>\S+)\s*$")
# `apt-get -s upgrade`: "Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian-Security:12/stable-security [amd64])"
PLANNED = re.compile(r"^Inst (?P<name>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+) (?P<origin>[^\[]*?)\s*\[")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    held: bool


def installed(text: str) -> dict[str, Package]:
    """Installed (or half-installed) packages from dpkg-query's lines; packages only known (status "un",
    "rc") are left out."""
    out = {}
    for line in text.splitlines():
        match = INSTALLED.match(line.strip())
        if not match or match["state"] in ("n", "c"):
            continue
        # dpkg-query names a package of a foreign architecture with its ":arch" only where needed
        out[match["name"]] = Package(match["name"], match["version"], match["want"] == "h")
    return out


def changes(before: dict[str, Package], after: dict[str, Package]) -> list[dict[str, Any]]:
    """Every package whose version changed, that came or that went, sorted by name."""
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old and new and old.version == new.version:
            continue
        kind = "upgraded" if old and new else "installed" if new else "removed"
        out.append(
            {"name": name, "change": kind, "from": old.version if old else None, "to": new.version if new else None}
        )
    return out


def covered(packages: dict[str, Package], patterns: list[str]) -> list[str]:
    """Installed packages whose name matches one of the hold patterns (shell-style, e.g. "nvidia-*")."""
    return sorted(name for name in packages if any(fnmatch.fnmatchcase(name.split(":")[0], p) for p in patterns))


def planned(simulation: str) -> list[dict[str, Any]]:
    """The packages `apt-get -s upgrade` would install or upgrade, with the origin of the new version."""
    out = []
    for line in simulation.splitlines():
        match = PLANNED.match(line)
        if match:
            out.append(
                {"name": match["name"], "from": match["old"], "to": match["new"], "origin": match["origin"].strip()}
            )
    return out
