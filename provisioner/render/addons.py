"""Cluster addon manifests: what is applied with kubectl from the first control-plane node.

Scope: turning an ``AddonContext`` into manifest texts (kubelet RBAC, the CNI, CoreDNS,
node-local DNS, metrics-server, dashboard, logging) and the list of images they pull. Which
addons exist, which file each renders to, and which images each runs are all declared here, on
the ``Addon`` records; the templates under ``templates/addons/`` only lay out YAML. Applying the
files, waiting for rollouts and pruning are the executor's business, not this module's.

Every manifest is based on the upstream manifest of the pinned version (the header of each
template names its source and says what was condensed). File names carry a two-digit prefix
so that sorting them gives the apply order: RBAC, then the network, then DNS, then the rest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from provisioner.render.engine import render_template

Cni = Literal["bridge", "flannel"]
CNIS: tuple[str, ...] = get_args(Cni)

# Put on every top-level object so a later `kubectl apply --prune -l ...` (or a plain
# `kubectl get -l`) can find exactly what this tool created.
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "provisioner"

# Every image key an addon may name. Extra keys in AddonContext.images are ignored, so the
# caller can pass its whole image table; missing keys of enabled addons are an error.
IMAGE_KEYS: tuple[str, ...] = (
    "coredns",
    "nodelocaldns",
    "metrics_server",
    "dashboard",
    "dashboard_metrics_scraper",
    "fluent_bit",
    "flannel",
)


@dataclass(frozen=True)
class AddonContext:
    """Everything the addon templates need, already validated by the spec layer."""

    cluster_name: str
    cluster_domain: str
    pod_cidr: str
    service_cidr: str
    node_cidr_mask_size: int
    dns_ip: str
    dns_replicas: int
    upstream_servers: tuple[str, ...]
    node_resolver: bool
    """The nodes have a resolver in /etc/resolv.conf (nspawn machines in the lab do not)."""
    nodelocaldns_enabled: bool
    nodelocaldns_ip: str
    cni: str
    metrics_server_enabled: bool
    dashboard_enabled: bool
    logging_enabled: bool
    api_server_host: str
    api_server_port: int
    images: dict[str, str]


@dataclass(frozen=True)
class Addon:
    """One addon: the file it renders to, its template, the images it runs, when it is on."""

    name: str
    filename: str
    template: str
    images: tuple[str, ...]
    enabled: Callable[[AddonContext], bool]


def _always(_ctx: AddonContext) -> bool:
    return True


def _cni_is(cni: str) -> Callable[[AddonContext], bool]:
    def check(ctx: AddonContext) -> bool:
        return ctx.cni == cni

    return check


# The catalogue. "bridge" has no entry: the bridge CNI is a host config file written by the
# node phase, there is nothing to apply in the cluster for it.
ADDONS: tuple[Addon, ...] = (
    Addon(
        name="kubelet-rbac",
        filename="00-kubelet-rbac.yaml",
        template="addons/kubelet-rbac.yaml.j2",
        images=(),
        enabled=_always,
    ),
    Addon(
        name="flannel",
        filename="10-cni-flannel.yaml",
        template="addons/cni-flannel.yaml.j2",
        images=("flannel",),
        enabled=_cni_is("flannel"),
    ),
    Addon(
        name="coredns",
        filename="20-coredns.yaml",
        template="addons/coredns.yaml.j2",
        images=("coredns",),
        enabled=_always,
    ),
    Addon(
        name="nodelocaldns",
        filename="21-nodelocaldns.yaml",
        template="addons/nodelocaldns.yaml.j2",
        images=("nodelocaldns",),
        enabled=lambda ctx: ctx.nodelocaldns_enabled,
    ),
    Addon(
        name="metrics-server",
        filename="30-metrics-server.yaml",
        template="addons/metrics-server.yaml.j2",
        images=("metrics_server",),
        enabled=lambda ctx: ctx.metrics_server_enabled,
    ),
    Addon(
        name="dashboard",
        filename="40-dashboard.yaml",
        template="addons/dashboard.yaml.j2",
        images=("dashboard", "dashboard_metrics_scraper"),
        enabled=lambda ctx: ctx.dashboard_enabled,
    ),
    Addon(
        name="logging",
        filename="50-logging.yaml",
        template="addons/logging.yaml.j2",
        images=("fluent_bit",),
        enabled=lambda ctx: ctx.logging_enabled,
    ),
)


def enabled_addons(ctx: AddonContext) -> list[Addon]:
    """The addons ``ctx`` turns on, in apply order (validates ``ctx`` first)."""
    _validate(ctx)
    return sorted((a for a in ADDONS if a.enabled(ctx)), key=lambda a: a.filename)


def addon_manifests(ctx: AddonContext) -> dict[str, str]:
    """File name -> manifest text, for the enabled addons, in apply order."""
    values = _template_values(ctx)
    return {a.filename: render_template(a.template, values) for a in enabled_addons(ctx)}


def addon_images(ctx: AddonContext) -> list[str]:
    """The image references the enabled addons pull, sorted and without duplicates."""
    return sorted({ctx.images[key] for a in enabled_addons(ctx) for key in a.images})


def _validate(ctx: AddonContext) -> None:
    if ctx.cni not in CNIS:
        raise ValueError(f"cni: {ctx.cni!r} is not one of {', '.join(CNIS)}")
    needed = {key for a in ADDONS if a.enabled(ctx) for key in a.images}
    missing = sorted(needed - set(ctx.images))
    if missing:
        raise ValueError(
            f"images: no reference for {', '.join(missing)}; the enabled addons run them, "
            "add them to the versions manifest or disable the addon"
        )
    if ctx.dns_replicas < 1:
        raise ValueError("dns_replicas: must be at least 1, cluster DNS cannot be scaled to 0")
    pods = ipaddress.ip_network(ctx.pod_cidr)
    if not pods.prefixlen < ctx.node_cidr_mask_size <= pods.max_prefixlen:
        raise ValueError(
            f"node_cidr_mask_size: {ctx.node_cidr_mask_size} must be longer than the pod "
            f"CIDR prefix /{pods.prefixlen} and at most /{pods.max_prefixlen}"
        )
    if ipaddress.ip_address(ctx.dns_ip) not in ipaddress.ip_network(ctx.service_cidr):
        raise ValueError(f"dns_ip: {ctx.dns_ip} is outside service_cidr {ctx.service_cidr}")


def _template_values(ctx: AddonContext) -> dict[str, Any]:
    values: dict[str, Any] = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
    values["managed_by"] = f"{MANAGED_BY_KEY}: {MANAGED_BY_VALUE}"
    # CoreDNS and node-local DNS forward non-cluster names here; with no upstreams given the
    # node's own resolver (kubelet hands CoreDNS the host resolv.conf, dnsPolicy Default) is
    # the upstream, as kubeadm does. Nodes without one (the lab has no DNS) get no forward
    # plugin: CoreDNS answers cluster names only, instead of refusing to start.
    values["dns_forward"] = " ".join(ctx.upstream_servers) or (
        "/etc/resolv.conf" if ctx.node_resolver else "")
    return values
