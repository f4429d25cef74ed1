"""How to log in to machines whose SSH endpoint is not their cluster address.

Scope: a provider that learns the login of each machine at run time (Vagrant: ``vagrant
ssh-config`` gives the management address, port, user and a per-machine key) records it in
``<state>/clusters/<name>/connections.json``. ``providers.reach`` makes it part of every
host's login (Ansible, verify, status), and the provider's own inventory reads it, so
everything logs in the same way. Machines without an entry use the spec's address and SSH
settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.state import write_private

FILENAME = "connections.json"


@dataclass(frozen=True)
class Connection:
    """One machine's SSH login."""

    host: str
    port: int
    user: str
    key: Path

    def known_hosts_name(self) -> str:
        """The host as ssh writes it in known_hosts (``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def write_connections(state: Path, connections: Mapping[str, Connection]) -> Path:
    """Write the connections of a cluster (``state``: its state directory), 0600."""
    data = {name: {"host": c.host, "port": c.port, "user": c.user, "key": str(c.key)}
            for name, c in sorted(connections.items())}
    path = state / FILENAME
    write_private(path, (json.dumps(data, indent=1) + "\n").encode())
    return path


def read_connections(state: Path) -> dict[str, Connection]:
    """The recorded connections of a cluster; empty when none were recorded."""
    try:
        raw = json.loads((state / FILENAME).read_text())
    except FileNotFoundError:
        return {}
    return {name: Connection(str(v["host"]), int(v["port"]), str(v["user"]), Path(v["key"]))
            for name, v in raw.items()}


def clear_connections(state: Path) -> None:
    """Forget the connections (the machines are gone)."""
    (state / FILENAME).unlink(missing_ok=True)
