"""Command-line settings of `fastmesh proxy` that win over the config file (`--listener NAME=ADDR`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class OverrideError(ValueError):
    """A command-line override does not fit the config."""


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the file, re-applied on every reload."""

    admin_address: str | None = None
    listeners: dict[str, str] = field(default_factory=dict)  # listener name -> ip:port

    def apply(self, snapshot: dict[str, Any]) -> None:
        listeners = snapshot["listeners"]
        names = [listener["name"] for listener in listeners]
        for name, address in self.listeners.items():
            if name not in names:
                raise OverrideError(
                    f"--listener {name}={address}: the config has no listener named {name!r}"
                    f" (it has: {', '.join(names) or 'none'})"
                )
        for listener in listeners:
            listener["address"] = self.listeners.get(listener["name"], listener["address"])
