"""The inventory a provider hands to the rest of the pipeline (and to people).

Scope: an Ansible YAML inventory in the cluster's state directory (``inventory.yaml``) with
kubespray's group names, so ``ansible -i <state>/clusters/<name>/inventory.yaml all -m ping``
works by hand and in tests. The render layer writes its own inventory for ansible-runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from provisioner.providers.connections import Connection
from provisioner.spec.topology import Machine, Role
from provisioner.state import cluster_dir

FILENAME = "inventory.yaml"


def inventory_data(
    machines: Sequence[Machine],
    private_key: Path,
    ssh_common_args: str | None = None,
    connections: Mapping[str, Connection] | None = None,
) -> dict[str, Any]:
    """The inventory as data: hosts with connection variables, grouped by role.

    A machine with a recorded connection (``vagrant ssh-config``) is reached that way.
    """
    hosts: dict[str, Any] = {}
    for m in machines:
        c = (connections or {}).get(m.name)
        hosts[m.name] = {
            "ansible_host": c.host if c else str(m.address),
            "ansible_user": c.user if c else m.ssh_user,
            "ansible_port": c.port if c else m.ssh_port,
            "ansible_ssh_private_key_file": str(c.key if c else m.ssh_key or private_key),
        }
        if c is not None and c.user != "root":
            hosts[m.name]["ansible_become"] = True

    def group(role: Role) -> dict[str, Any]:
        return {"hosts": {m.name: None for m in machines if role in m.roles}}

    all_vars: dict[str, Any] = {"ansible_python_interpreter": "/usr/bin/python3"}
    if ssh_common_args:
        all_vars["ansible_ssh_common_args"] = ssh_common_args
    return {
        "all": {
            "hosts": hosts,
            "vars": all_vars,
            "children": {
                "kube_control_plane": group(Role.CONTROL_PLANE),
                "etcd": group(Role.ETCD),
                "kube_node": group(Role.NODE),
                "k8s_cluster": {"children": {"kube_control_plane": None, "kube_node": None}},
            },
        }
    }


def render(data: dict[str, Any]) -> str:
    """YAML text of an inventory (stable order, so unchanged inventories compare equal)."""
    header = "# Written by provisioner (machines provider); regenerated on every `up`.\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def inventory_path(cluster: str) -> Path:
    """Where the inventory of ``cluster`` lives."""
    return cluster_dir(cluster) / FILENAME


def write_inventory(
    cluster: str,
    machines: Sequence[Machine],
    private_key: Path,
    ssh_common_args: str | None = None,
    connections: Mapping[str, Connection] | None = None,
) -> Path:
    """Write the inventory (only when its content changed) and return its path."""
    path = inventory_path(cluster)
    text = render(inventory_data(machines, private_key, ssh_common_args, connections))
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
