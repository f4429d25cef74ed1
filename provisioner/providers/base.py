"""What every machine provider offers: up, down, status and an inventory.

Scope: the small typed contract between the CLI (and later the provision command) and a
provider, plus the error type providers raise. Providers keep their own state; callers only
see these records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.spec.topology import Machine

Reporter = Callable[[str], None]
"""Receives one human-readable progress line (the CLI prints it; tests may collect it)."""


def quiet(_: str) -> None:
    """A reporter that drops progress lines."""


class ProviderError(RuntimeError):
    """A provider cannot do what was asked; the message names the cause and the fix."""


@dataclass(frozen=True)
class NodeStatus:
    """What a provider knows about one machine right now."""

    machine: Machine
    state: str
    """``running``, ``stopped`` or ``absent`` (no machine was made yet)."""
    pid: int | None = None
    """Main process of the machine on the host (the nspawn process), if running."""
    ssh: bool = False
    """An SSH login with the cluster key succeeded."""
    systemd: str | None = None
    """Output of ``systemctl is-system-running`` inside the machine, if reachable."""
    memory_bytes: int | None = None
    """Memory charged to the machine's cgroup, if the provider can tell."""


@dataclass(frozen=True)
class NodeChange:
    """What ``up`` did to one machine."""

    name: str
    action: str
    """``created`` (new root filesystem and started), ``started`` or ``unchanged``."""
    seconds: float


@dataclass(frozen=True)
class UpResult:
    """Outcome of ``up``: per-machine changes and the inventory written."""

    changes: tuple[NodeChange, ...]
    inventory: Path
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when any machine was created or started."""
        return any(c.action != "unchanged" for c in self.changes)


class MachineProvider(Protocol):
    """A source of machines for one cluster spec."""

    def up(self) -> UpResult:
        """Make every machine of the spec exist and run; idempotent."""
        ...

    def down(self, purge: bool = False) -> None:
        """Stop the cluster's machines; with ``purge`` also delete them."""
        ...

    def status(self) -> list[NodeStatus]:
        """Report every machine of the spec (and leftovers the provider still holds)."""
        ...

    def inventory(self) -> Path:
        """Write (if needed) and return the Ansible inventory of the running machines."""
        ...
