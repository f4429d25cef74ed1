"""containerd with runc: config.toml, per-registry hosts.toml, unit, crictl config."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provisioner.components.base import Component, File, Material
from provisioner.components.systemd import unit_file
from provisioner.render.engine import render_template

if TYPE_CHECKING:
    from provisioner.plan.model import HostPlan, Plan
    from provisioner.spec.models import Cluster
    from provisioner.spec.topology import Machine

SOCKET = "/run/containerd/containerd.sock"


def _registry_host_dir(registry: str) -> str:
    # containerd's hosts directory names docker.io as-is, a port as _<port>_ is not needed:
    # it uses the literal "host:port" directory name.
    return f"/etc/containerd/certs.d/{registry}"


class Containerd(Component):
    """The container runtime on every node."""

    name: ClassVar[str] = "containerd"
    phase: ClassVar[str] = "runtime"
    service: ClassVar[str | None] = "containerd"
    artifacts: ClassVar[tuple[str, ...]] = ("containerd", "crictl")

    def runs_on(self, cluster: Cluster, machine: Machine) -> bool:
        """Nodes that run kubelet."""
        return machine.is_node

    def files(self, plan: Plan, host: HostPlan, material: Material) -> list[File]:
        """Runtime configuration; mirrors and private registries in certs.d (hot-reloaded)."""
        spec = plan.cluster.spec
        oci = spec.container_runtime.oci_runtime
        auths = []
        for p in spec.registries.private:
            if p.username is not None:
                auths.append({"host": p.host, "username": p.username,
                              "password": material.registry_password(p.host)})
        ctx = {
            "cluster_name": plan.name,
            "oci_runtime": oci,
            "oci_binary": f"/usr/local/sbin/{oci}",
            "pause_image": f"{spec.registries.pause_image_registry}/pause:"
                           f"{plan.release.component('pause')}",
            "auths": auths,
            "restrict_oom_score_adj": spec.provider.type == "nspawn",
        }
        config = render_template("containerd/config.toml.j2", ctx).encode()
        r = ("containerd",)
        files = [
            File("/etc/containerd/config.toml", config, 0o600 if auths else 0o644, bool(auths), r),
            unit_file(plan.name, "containerd", "containerd container runtime (provisioner)",
                      "https://containerd.io", "/usr/local/bin/containerd", [],
                      after=("network.target", "local-fs.target"), wants=(),
                      service_type="notify", limit_nofile=1048576,
                      extra_service=("ExecStartPre=-/sbin/modprobe overlay", "Delegate=yes",
                                     "KillMode=process", "OOMScoreAdjust=-999",
                                     "LimitNPROC=infinity", "LimitCORE=infinity",
                                     "TasksMax=infinity")),
            File("/etc/crictl.yaml", render_template("containerd/crictl.yaml.j2",
                                                     {"socket": SOCKET}).encode()),
        ]
        # Mirrors and private registries: certs.d/<registry>/hosts.toml (no restart needed).
        # A mirror endpoint that is itself a private registry uses that registry's CA.
        private = {reg.host: reg for reg in spec.registries.private}
        mirrors = {m.registry: m.endpoints for m in spec.registries.mirrors}

        def trust(host: str) -> dict[str, object]:
            reg = private.get(host)
            return {
                "ca_file": f"{_registry_host_dir(host)}/ca.crt"
                if reg is not None and reg.ca_file is not None else None,
                "skip_verify": reg.insecure_skip_verify if reg is not None else False,
            }

        for registry in sorted(set(private) | set(mirrors)):
            server = ("https://registry-1.docker.io" if registry == "docker.io"
                      else f"https://{registry}")
            hosts = [{"url": url, **trust(url.split("://", 1)[1].split("/")[0])}
                     for url in mirrors.get(registry, [])]
            if registry in private:
                hosts.append({"url": server, **trust(registry)})
            ctx_h = {"server": server, "hosts": hosts}
            files.append(File(f"{_registry_host_dir(registry)}/hosts.toml",
                              render_template("containerd/hosts.toml.j2", ctx_h).encode()))
            reg = private.get(registry)
            if reg is not None and reg.ca_file is not None:
                files.append(File(f"{_registry_host_dir(registry)}/ca.crt",
                                  material.registry_ca(reg.host)))
        return files
