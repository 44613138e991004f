# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a host reaches its own endpoint: the gateway's health check and presets reload, the exporters."""

from __future__ import annotations

from typing import Any

# wildcard binds answer on loopback
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def local_url(host: str, port: Any) -> str:
    """http://ADDRESS:PORT for a bind address: loopback for a wildcard, IPv6 addresses in brackets."""
    address = _LOOPBACK.get(str(host), str(host))
    if ":" in address:
        address = f"[{address}]"
    return f"http://{address}:{int(port)}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"local_url": local_url}
