"""How to reach a host: the SSH endpoint, login, key and trusted host keys, decided once.

Scope: ``Reach`` (one host's SSH login) and the functions that work it out for every host
of a plan. The Ansible inventory (``render.runner``) and ssh arguments (``provision``),
verify's paramiko client (``verify.ssh``) and the status commands all take their logins
from here, so they cannot disagree. The rules: a connection the provider recorded
(``vagrant ssh-config``, see ``providers.connections``) wins; otherwise the host's cluster
address with its per-host SSH user, port and key, falling back to spec.ssh and then, for
machines a provider made, to the cluster's own key. Host keys are always checked, against
the cluster's pinned ``<state>/ssh/known_hosts`` and, for ``static`` hosts, the user's
``~/.ssh/known_hosts`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.plan.model import Plan
from provisioner.providers.connections import Connection, read_connections
from provisioner.providers.ssh import default_key_path, pinned_known_hosts

USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclass(frozen=True)
class Reach:
    """How to log in to one host."""

    host: str  # the SSH endpoint: on Vagrant VMs not the cluster address
    port: int
    user: str
    key: Path | None  # None: ssh-agent and the user's default keys
    known_hosts: tuple[Path, ...]  # trusted host keys, in order (missing files are skipped)

    @property
    def become(self) -> bool:
        """Commands that need root go through sudo: the login is not root."""
        return self.user != "root"

    @property
    def destination(self) -> str:
        """``user@host:port``, as people read it."""
        return f"{self.user}@{self.host}:{self.port}"


def default_key(plan: Plan, state_dir: Path) -> Path | None:
    """The key of hosts that name none, neither per host nor in spec.ssh: the cluster's own
    for machines a provider made; None (ssh-agent, the user's keys) for ``static`` hosts."""
    if plan.cluster.spec.provider.type == "static":
        return None
    return default_key_path(state_dir)


def known_hosts_files(plan: Plan, state_dir: Path) -> tuple[Path, ...]:
    """The host-key files every SSH login of the cluster trusts, and nothing else.

    Machines the provider made (nspawn, vagrant) are pinned in ``<state>/ssh/known_hosts``;
    ``static`` hosts are trusted through that file (keys recorded by
    ``--trust-on-first-use``) and the user's own ``~/.ssh/known_hosts``.
    """
    pinned = pinned_known_hosts(state_dir)
    if plan.cluster.spec.provider.type == "static":
        return (pinned, USER_KNOWN_HOSTS.expanduser())
    return (pinned,)


def resolve(plan: Plan, key: Path | None, connections: Mapping[str, Connection],
            known_hosts: tuple[Path, ...] = ()) -> dict[str, Reach]:
    """Every host's login from explicit inputs (``key``: for hosts that name none); render
    calls this with no state directory at hand, everything else calls ``reach``."""
    out: dict[str, Reach] = {}
    for h in plan.hosts:
        m = h.machine
        c = connections.get(h.name)
        if c is not None:
            out[h.name] = Reach(c.host, c.port, c.user, c.key, known_hosts)
        else:
            out[h.name] = Reach(str(m.address), m.ssh_port, m.ssh_user, m.ssh_key or key,
                                known_hosts)
    return out


def reach(plan: Plan, state_dir: Path,
          connections: Mapping[str, Connection] | None = None) -> dict[str, Reach]:
    """How to reach every host of ``plan`` whose state directory is ``state_dir``, with the
    connections recorded there unless ``connections`` are given."""
    if connections is None:
        connections = read_connections(state_dir)
    return resolve(plan, default_key(plan, state_dir), connections,
                   known_hosts_files(plan, state_dir))


def trusted_files(reaches: Mapping[str, Reach]) -> tuple[Path, ...]:
    """Every known_hosts file any of ``reaches`` trusts, in order: Ansible takes one set of
    ssh arguments for all hosts."""
    return tuple(dict.fromkeys(f for r in reaches.values() for f in r.known_hosts))
