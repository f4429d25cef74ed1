"""The ansible-runner private data dir: inventory, extravars and Ansible settings.

Layout (ansible-runner's): ``inventory/hosts.json`` with kubespray's group names,
``env/extravars`` (component-prefixed variables), ``env/envvars`` (Ansible settings chosen
for speed: pipelining, SSH ControlPersist, forks >= hosts, facts only when asked) and
``env/settings``. The playbooks themselves are linked in by the executor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from provisioner.plan.model import Plan
from provisioner.providers.connections import Connection
from provisioner.providers.reach import Reach, resolve
from provisioner.spec.topology import Role


def _yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False).encode()


def inventory(plan: Plan, reaches: Mapping[str, Reach]) -> dict[str, Any]:
    """Ansible YAML inventory: groups kube_control_plane, etcd, kube_node, k8s_cluster.

    Each host is reached as ``reaches`` says (``provisioner.providers.reach``).
    """
    hostvars: dict[str, dict[str, Any]] = {}
    for h in plan.hosts:
        r = reaches[h.name]
        v: dict[str, Any] = {
            "ansible_host": r.host,
            "ansible_user": r.user,
            "ansible_port": r.port,
            # The cluster address roles use (certificates name it); ansible_host is only
            # the SSH endpoint, which differs on Vagrant VMs (the management address).
            "provisioner_address": str(h.machine.address),
            "provisioner_host_index": h.index,
        }
        if r.key is not None:
            v["ansible_ssh_private_key_file"] = str(r.key)
        if r.become:
            v["ansible_become"] = True
        if h.pod_cidr is not None:
            v["provisioner_pod_cidr"] = str(h.pod_cidr)
        hostvars[h.name] = v
    groups: dict[str, Any] = {}
    for role in Role:
        groups[role.value] = {"hosts": {h.name: None for h in plan.hosts
                                        if role in h.machine.roles}}
    groups["k8s_cluster"] = {"children": {Role.CONTROL_PLANE.value: None, Role.NODE.value: None}}
    groups["lb"] = {"hosts": {h.name: None for h in plan.hosts
                              if "haproxy" in h.components or "keepalived" in h.components}}
    return {"all": {"hosts": hostvars, "children": groups}}


def extravars(plan: Plan) -> dict[str, Any]:
    """Variables every playbook sees, prefixed by component (kubespray's convention)."""
    spec = plan.cluster.spec
    out: dict[str, Any] = {
        "provisioner_cluster_name": plan.name,
        "provisioner_phases": [p.name for p in plan.all_phases()],
        "kube_version": plan.version,
        "kube_minor": plan.minor,
        "kube_apiserver_port": spec.apiserver.secure_port,
        "kube_apiserver_endpoint": plan.endpoints.node,
        "kube_service_ip": str(plan.kubernetes_service_ip),
        "kube_dns_ip": str(plan.dns_service_ip),
        "kube_addons": list(plan.addons),
        "kube_first_control_plane": plan.control_plane[0].name,
        "kube_proxy_mode": spec.network.kube_proxy_mode,
        "kube_pods_subnet": str(spec.network.pod_cidr),
        "container_runtime_oci": spec.container_runtime.oci_runtime,
        "lb_mode": spec.load_balancer.mode,
        "lb_port": spec.load_balancer.port,
        "network_cni": spec.network.cni,
        "artifacts_source": spec.artifacts.source,
    }
    for name, version in sorted(plan.release.components.items()):
        out[f"{name}_version"] = version
    return out


def envvars(plan: Plan) -> dict[str, str]:
    """Ansible settings chosen for speed and for unattended runs."""
    return {
        "ANSIBLE_PIPELINING": "True",
        # Host keys are always checked; provision adds the known_hosts files the hosts'
        # logins trust (provisioner.providers.reach) to these arguments.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s "
        "-o StrictHostKeyChecking=yes -o LogLevel=ERROR",
        "ANSIBLE_FORKS": str(max(10, len(plan.hosts))),
        # Facts are gathered by the tasks that need them, not on every play.
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_TIMEOUT": "20",
    }


def runner_files(plan: Plan, ssh_key: Path | None,
                 connections: Mapping[str, Connection] | None = None) -> dict[str, bytes]:
    """Relative path -> content of the private data dir (``ssh_key``: the key of hosts that
    name none; ``connections``: recorded logins, see ``provisioner.providers.reach``)."""
    reaches = resolve(plan, ssh_key, connections or {})
    return {
        # JSON is YAML too, and the inventory is the one document that grows with the
        # cluster: json.dumps is ~50x faster than a YAML emitter for 1,000 hosts.
        "inventory/hosts.json": (json.dumps(inventory(plan, reaches), indent=1,
                                            sort_keys=True) + "\n").encode(),
        "env/extravars": _yaml(extravars(plan)),
        "env/envvars": _yaml(envvars(plan)),
        # Read by ansible-runner after the run's arguments: the executor consumes events, and
        # a stdout copy on disk could hold task output.
        "env/settings": _yaml({"suppress_ansible_output": True, "suppress_output_file": True,
                               "job_timeout": 3600}),
    }
