"""Pod networking on the host side: CNI plugin binaries everywhere, and for the ``bridge`` CNI
the per-node conflist and routes to every other node's pod subnet (no overlay, no image).
flannel writes its own host config from its DaemonSet (addons phase); its CNI plugin binary
is installed here."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import Component, File, Material
from provisioner.components.systemd import unit_file

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

NET_D = "/etc/cni/net.d"
ROUTES = "/etc/provisioner/pod-routes"


class CNIBridge(Component):
    """CNI bridge plugin with host-local IPAM on this node's pod subnet, plus host routes."""

    name: ClassVar[str] = "cni-bridge"
    phase: ClassVar[str] = "node"
    service: ClassVar[str | None] = "provisioner-pod-routes"
    artifacts: ClassVar[tuple[str, ...]] = ("cni-plugins",)

    def __init__(self) -> None:
        self._memo: tuple[Plan, bytes] | None = None

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Nodes, when the cluster uses the bridge CNI."""
        return machine.is_node and cluster.spec.network.cni == "bridge"

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """The conflist and a oneshot unit installing routes to the other nodes' subnets."""
        assert host.pod_cidr is not None  # the planner assigns one to every bridge node
        conf = {
            "cniVersion": "1.0.0",
            "name": "provisioner",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(host.pod_cidr)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }
        # One routes file, identical on every node (rendered once per plan, O(nodes)); each
        # node skips the line that points at itself.
        via_self = str(host.address)
        # "$$" is systemd's escape for a literal "$" in ExecStart; "#" lines are comments.
        script = (f'grep -v "^#" {ROUTES} | while read -r net via; do '
                  f'[ "$$via" = "{via_self}" ] || '
                  '/sbin/ip route replace "$$net" via "$$via"; done')
        return [
            File(f"{NET_D}/10-provisioner-bridge.conflist",
                 (json.dumps(conf, indent=2, sort_keys=True) + "\n").encode()),
            File(ROUTES, self._routes(plan), 0o644, False, ("provisioner-pod-routes",)),
            unit_file(plan.name, "provisioner-pod-routes",
                      "Routes to other nodes' pod subnets (provisioner bridge CNI)",
                      "https://www.cni.dev/plugins/current/main/bridge/",
                      f"/bin/sh -c '{script}'", [],
                      service_type="oneshot", limit_nofile=None,
                      extra_service=("RemainAfterExit=yes",)),
        ]

    def _routes(self, plan: Plan) -> bytes:
        """``<pod subnet> <node address>`` per node; memoised for the plan being rendered."""
        if self._memo is None or self._memo[0] is not plan:
            lines = "".join(f"{h.pod_cidr} {h.address}\n" for h in plan.nodes)
            self._memo = (plan, ("# Managed by provisioner: pod subnet and node address\n"
                                 + lines).encode())
        return self._memo[1]


class CNIPlugins(Component):
    """The reference CNI plugin binaries in /opt/cni/bin (every CNI's pods use some).

    Installed with the runtime: containerd's CRI plugin is what executes them."""

    name: ClassVar[str] = "cni-plugins"
    phase: ClassVar[str] = "runtime"
    artifacts: ClassVar[tuple[str, ...]] = ("cni-plugins",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Every node."""
        return machine.is_node

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Nothing rendered: binaries come from the artifacts."""
        return []


class CNIFlannelPlugin(Component):
    """The flannel CNI plugin in /opt/cni/bin: the conflist flannel's DaemonSet writes calls it,
    and it delegates to the bridge and host-local plugins with the node's flannel subnet."""

    name: ClassVar[str] = "cni-flannel-plugin"
    phase: ClassVar[str] = "runtime"
    artifacts: ClassVar[tuple[str, ...]] = ("cni-plugin-flannel",)

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Nodes, when the cluster uses flannel."""
        return machine.is_node and cluster.spec.network.cni == "flannel"

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Nothing rendered: the binary comes from the artifacts."""
        return []
