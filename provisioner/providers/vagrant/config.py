"""What the top-level ``Vagrantfile`` builds: the spec's machines as plain JSON.

Scope: one pure translation of a validated cluster spec into the settings Vagrant needs
(names, addresses, memory, CPUs, box, libvirt or VirtualBox settings, networks, console
logs, where Vagrant keeps its machine state). The Vagrantfile holds no cluster logic of its
own: it asks ``provisioner vagrant config SPEC`` (or reads the file the provider wrote) and
applies the result, so machine names, addresses and Vagrant's state directory can never
differ between a plain ``vagrant`` command and the rest of the pipeline.

Specs of the other providers translate too (with the vagrant defaults), so one spec can be
rehearsed on VMs; the result then carries a note saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from provisioner.spec.models import Cluster, StaticProvider, VagrantProvider
from provisioner.spec.topology import machines

SCHEMA = 1
DOTFILE_DIR = "dot"
"""Vagrant's machine state (``VAGRANT_DOTFILE_PATH``), under the cluster's ``vagrant/``."""
CONSOLE_DIR = "console"
"""The VMs' serial console logs, under the cluster's ``vagrant/``."""
KVM_DEVICE = Path("/dev/kvm")
# Hosts whose /dev/kvm is PVM (a paravirtualized KVM) cannot boot a stock kernel with it.
PVM_MODULE = Path("/sys/module/kvm_pvm")
SLOW_NOTE = (
    "no usable hardware virtualization on this host ({reason}): VMs run under software "
    "emulation (libvirt driver qemu, CPU model {model}); expect about 1 minute per VM to boot "
    "and about 20 s per Ansible task"
)


@dataclass(frozen=True)
class Accel:
    """The libvirt driver chosen for this host and why."""

    driver: str  # "kvm" or "qemu"
    reason: str


def detect_accel(kvm: Path = KVM_DEVICE, pvm: Path = PVM_MODULE) -> Accel:
    """``kvm`` when /dev/kvm exists, is usable and is not PVM; ``qemu`` (TCG) otherwise."""
    if not kvm.exists():
        return Accel("qemu", f"{kvm} does not exist")
    if pvm.exists():
        return Accel("qemu", f"{kvm} is PVM ({pvm} is loaded), which cannot boot a stock kernel")
    if not os.access(kvm, os.R_OK | os.W_OK):
        return Accel("qemu", f"{kvm} is not readable and writable by this user")
    return Accel("kvm", f"{kvm} is usable")


def vagrant_settings(cluster: Cluster) -> VagrantProvider:
    """The spec's vagrant settings, or the defaults for a spec of another provider."""
    provider = cluster.spec.provider
    if isinstance(provider, VagrantProvider):
        return provider
    subnet = getattr(provider, "subnet", None)
    defaults: dict[str, Any] = {"type": "vagrant"}
    if isinstance(subnet, IPv4Network):
        defaults["subnet"] = subnet
    return VagrantProvider.model_validate(defaults)


def vagrant_dir(state: Path) -> Path:
    """Everything Vagrant and the provider keep for one cluster (``state``: its state
    directory): Vagrant's machine state, console logs, the settings file, command logs."""
    return state / "vagrant"


def network_names(cluster: str) -> tuple[str, str]:
    """libvirt network names of a cluster: (private, management)."""
    return f"provisioner-{cluster}", f"provisioner-{cluster}-mgmt"


def _private_subnet(cluster: Cluster, settings: VagrantProvider) -> IPv4Network:
    if isinstance(cluster.spec.provider, StaticProvider):
        # Static hosts carry their own addresses; the smallest /24s that hold them.
        nets = {IPv4Network(f"{h.address}/24", strict=False) for h in cluster.spec.hosts}
        return sorted(nets)[0]
    return settings.subnet


def vagrant_config(
    cluster: Cluster,
    state_vagrant: Path,
    accel: Accel | None = None,
) -> dict[str, Any]:
    """The JSON document the Vagrantfile applies (see the Vagrantfile for its use).

    ``state_vagrant`` is the cluster's ``vagrant_dir``: plain ``vagrant`` commands keep their
    machine state in its ``dot`` (``dotfile``), as the provider does, so both see the same
    VMs. ``spec_provider`` tells the Vagrantfile whether the spec is a vagrant cluster (its
    triggers converge it) or another provider's machines rehearsed on VMs (VMs only).
    """
    v = vagrant_settings(cluster)
    notes: list[str] = []
    if not isinstance(cluster.spec.provider, VagrantProvider):
        notes.append(f"spec provider is {cluster.spec.provider.type!r}: these VMs rehearse its "
                     "machines with the vagrant defaults")
    driver: str = v.libvirt_driver
    reason = "set in spec.provider.libvirtDriver"
    if v.vagrant_provider == "libvirt" and driver == "auto":
        got = accel or detect_accel()
        driver, reason = got.driver, got.reason
    if v.vagrant_provider == "libvirt" and driver == "qemu":
        notes.append(SLOW_NOTE.format(reason=reason, model=v.cpu_model))
    private = _private_subnet(cluster, v)
    private_name, mgmt_name = network_names(cluster.metadata.name)
    host_address = IPv4Address(int(private.network_address) + 1)
    return {
        "schema": SCHEMA,
        "cluster": cluster.metadata.name,
        "spec_provider": cluster.spec.provider.type,
        "dotfile": str(state_vagrant / DOTFILE_DIR),
        "box": v.box,
        "provider": v.vagrant_provider,
        "memory": v.memory_mib,
        "cpus": v.cpus,
        "boot_timeout": v.boot_timeout,
        "libvirt": {
            "driver": driver if driver != "auto" else "kvm",
            "cpu_mode": "custom" if driver == "qemu" else "host-passthrough",
            "cpu_model": v.cpu_model,
            "management_network_name": mgmt_name,
            "management_network_address": str(v.management_subnet),
            "management_network_mode": v.management_network_mode,
        },
        "network": {
            "name": private_name,
            "subnet": str(private),
            "netmask": str(private.netmask),
            "host_address": str(host_address),
        },
        "machines": [
            {
                "name": m.name,
                "address": str(m.address),
                "roles": sorted(r.value for r in m.roles),
                "console_log": str(state_vagrant / CONSOLE_DIR / f"{m.name}.log"),
            }
            for m in machines(cluster)
        ],
        "notes": notes,
    }
