"""Build the plan from a validated spec: deterministic, no I/O but one read of the host's
cgroup mode for nspawn machines (they share its kernel)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_address

from provisioner.components import ALL
from provisioner.pki.model import CARequest, CertRequest, PkiPlan, apiserver_cert
from provisioner.plan.model import Endpoints, HostPlan, Phase, Plan
from provisioner.spec.models import Cluster
from provisioner.spec.topology import Machine, machines, pod_subnet_indexes
from provisioner.versions import manifest

# The phase order of every run; each phase is also the name of its playbook and role.
PHASES: tuple[tuple[str, str], ...] = (
    ("preflight", "Check hosts before changing anything: OS, memory, ports, time, swap, SSH"),
    ("os", "Kernel modules, sysctls, packages, users and directories"),
    ("runtime", "containerd and the OCI runtime, registry mirrors"),
    ("etcd", "etcd members over mutual TLS, one at a time, quorum checked"),
    ("lb", "The apiserver load balancer"),
    ("control-plane", "kube-apiserver, kube-controller-manager, kube-scheduler"),
    ("node", "kubelet, kube-proxy and host-side pod networking"),
    ("addons", "CNI, DNS and optional addons, applied from the first control-plane node"),
    ("verify", "Named health checks of the whole cluster"),
)

# What each phase needs finished before it starts, where the run includes it (a phase that is
# converged or not selected counts as finished; ``phase_after`` follows it transitively).
# After os, runtime, etcd and lb touch disjoint files, services and packages, so they run at
# the same time; the control plane needs etcd and its load balancer, the nodes need the
# runtime and the apiservers, the addons the nodes.
PHASE_AFTER: dict[str, tuple[str, ...]] = {
    "preflight": (),
    "os": ("preflight",),
    "runtime": ("os",),
    "etcd": ("os",),
    "lb": ("os",),
    "control-plane": ("etcd", "lb"),
    "node": ("runtime", "lb", "control-plane"),
    "addons": ("node",),
    "verify": ("addons",),
}


def phase_after(name: str) -> frozenset[str]:
    """Every phase that must be finished before ``name`` starts (transitively)."""
    out: set[str] = set()
    todo = list(PHASE_AFTER.get(name, ()))
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(PHASE_AFTER.get(dep, ()))
    return frozenset(out)


def nodes_on_cgroup_v1(cluster: Cluster) -> bool:
    """Whether the cluster's nodes run cgroup v1.

    nspawn machines share this host's kernel and cgroup mode, so this host is asked (the
    one read of the environment a plan makes). Vagrant VMs and static hosts run the
    supported OS (Debian 12: cgroup v2); preflight checks that on each host.
    """
    if cluster.spec.provider.type != "nspawn":
        return False
    from provisioner.providers.nspawn.cgroups import host_cgroup_v1

    return host_cgroup_v1()


def build_plan(cluster: Cluster, *, cgroup_v1: bool | None = None) -> Plan:
    """Plan ``cluster`` (which must come from ``spec.load``: defaults filled, rules passed).

    ``cgroup_v1`` overrides the detection of :func:`nodes_on_cgroup_v1` (tests)."""
    version = cluster.spec.kubernetes_version or manifest.default_version()
    release = manifest.release_for(version)
    ms = machines(cluster)
    pod_cidrs = _pod_cidrs(cluster, ms)
    hosts = tuple(_host_plan(cluster, m, i, pod_cidrs.get(m.name)) for i, m in enumerate(ms))
    svc = cluster.spec.network.service_cidr
    kube_svc_ip = IPv4Address(int(svc.network_address) + 1)
    dns_ip = IPv4Address(int(svc.network_address) + 10)
    endpoints = _endpoints(cluster, hosts)
    addons = _addons(cluster)
    return Plan(
        cluster=cluster,
        version=version,
        release=release,
        hosts=hosts,
        endpoints=endpoints,
        kubernetes_service_ip=kube_svc_ip,
        dns_service_ip=dns_ip,
        pki=_pki(cluster, hosts, kube_svc_ip),
        phases=_phases(hosts, addons),
        addons=addons,
        cgroup_v1=nodes_on_cgroup_v1(cluster) if cgroup_v1 is None else cgroup_v1,
    )


def _pod_cidrs(cluster: Cluster, ms: tuple[Machine, ...]) -> dict[str, IPv4Network]:
    """Per-node pod subnets (``pod_subnet_indexes``: stable while a node keeps its place)."""
    nw = cluster.spec.network
    if nw.cni != "bridge":
        return {}
    size = 2 ** (32 - nw.node_cidr_mask_size)
    base = int(nw.pod_cidr.network_address)
    return {name: IPv4Network((base + i * size, nw.node_cidr_mask_size))
            for name, i in pod_subnet_indexes(cluster, ms).items()}


def _host_plan(cluster: Cluster, m: Machine, index: int, pod_cidr: IPv4Network | None
               ) -> HostPlan:
    comps = [c for c in ALL if c.runs_on(cluster, m)]
    artifacts: list[str] = []
    for c in comps:
        artifacts.extend(c.artifacts)
        if c.name == "containerd":
            artifacts.append(cluster.spec.container_runtime.oci_runtime)
    ports = sorted({p for c in comps for p in c.listen_ports(cluster)})
    return HostPlan(
        machine=m,
        index=index,
        components=tuple(c.name for c in comps if c.service is not None or c.name == "addons"),
        parts=tuple(c.name for c in comps),
        artifacts=tuple(dict.fromkeys(artifacts)),
        ports=tuple(ports),
        pod_cidr=pod_cidr,
    )


def _endpoints(cluster: Cluster, hosts: tuple[HostPlan, ...]) -> Endpoints:
    lb = cluster.spec.load_balancer
    port = cluster.spec.apiserver.secure_port
    cps = [h for h in hosts if h.machine.is_control_plane]
    if lb.mode == "localHaproxy":
        node = f"https://127.0.0.1:{lb.port}"
        # The controller cannot use a node's loopback: it talks to the first apiserver.
        admin = f"https://{cps[0].address}:{port}"
    elif lb.mode == "vip":
        node = admin = f"https://{lb.vip}:{lb.port}"
    else:
        node = admin = f"https://{lb.address}:{lb.port}"
    return Endpoints(node=node, admin=admin,
                     lb_backends=tuple((h.name, f"{h.address}:{port}") for h in cps))


def _addons(cluster: Cluster) -> tuple[str, ...]:
    spec = cluster.spec
    out = [] if spec.network.cni == "bridge" else [f"cni-{spec.network.cni}"]
    out.append("coredns")
    if spec.dns.node_local_dns.enabled:
        out.append("nodelocaldns")
    for name, addon in (("metrics-server", spec.addons.metrics_server),
                        ("dashboard", spec.addons.dashboard),
                        ("logging", spec.addons.logging)):
        if addon.enabled:
            out.append(name)
    return tuple(out)


def _phases(hosts: tuple[HostPlan, ...], addons: tuple[str, ...]) -> tuple[Phase, ...]:
    by_phase = {c.name: c.phase for c in ALL}
    out = []
    first_cp = next(h.name for h in hosts if h.machine.is_control_plane)
    for name, description in PHASES:
        if name in ("preflight", "verify"):
            targets = tuple(h.name for h in hosts)
            children: tuple[Phase, ...] = ()
        elif name == "addons":
            targets = (first_cp,)
            children = tuple(Phase(f"addons/{a}", f"Apply {a}", targets) for a in addons)
        else:
            comps = [c for c in ALL if c.phase == name]
            targets = tuple(h.name for h in hosts
                            if any(by_phase.get(c) == name for c in h.components)
                            or (name == "os"))
            children = tuple(
                Phase(f"{name}/{c.name}", (c.__doc__ or "").strip().splitlines()[0],
                      tuple(h.name for h in hosts if c.name in h.components))
                for c in comps
                if c.service is not None and any(c.name in h.components for h in hosts)
            )
        out.append(Phase(name, description, targets, children))
    return tuple(out)


def _san_split(values: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for v in values:
        try:
            ip_address(v)
            ips.append(v)
        except ValueError:
            dns.append(v)
    return dns, ips


def _pki(cluster: Cluster, hosts: tuple[HostPlan, ...], kube_svc_ip: IPv4Address) -> PkiPlan:
    spec = cluster.spec
    domain = spec.network.cluster_domain
    lb = spec.load_balancer
    cps = [h for h in hosts if h.machine.is_control_plane]
    extra = list(spec.apiserver.extra_sans)
    if lb.mode == "external" and lb.address:
        extra.append(lb.address)
    extra_dns, extra_ips = _san_split(extra)
    api_dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
               f"kubernetes.default.svc.{domain}", "localhost", *extra_dns]
    api_ips = [str(kube_svc_ip), "127.0.0.1", *extra_ips]
    if lb.vip is not None:
        api_ips.append(str(lb.vip))
    # One serving pair per control-plane node (kubeadm's way): its own name and address plus
    # the names every apiserver answers to, so adding or removing a control-plane node
    # re-issues nothing on the others and restarts none of their apiservers.
    certs: list[CertRequest] = [
        CertRequest(apiserver_cert(h.name), "ca", "kube-apiserver",
                    dns_names=tuple(dict.fromkeys([*api_dns, h.name])),
                    ip_addresses=tuple(dict.fromkeys([*api_ips, str(h.address)])), server=True)
        for h in cps
    ]
    certs += [
        CertRequest("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client",
                    client=True),
        CertRequest("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client",
                    client=True),
        CertRequest("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True),
        CertRequest("controller-manager", "ca", "system:kube-controller-manager", client=True),
        CertRequest("scheduler", "ca", "system:kube-scheduler", client=True),
        # kubeadm's split (1.29+): admin is bound to cluster-admin through RBAC, so it can
        # be revoked; super-admin (system:masters, which RBAC cannot revoke) stays in the
        # state directory and makes that binding on a new cluster.
        CertRequest("admin", "ca", "kubernetes-admin",
                    organizations=("kubeadm:cluster-admins",), client=True),
        CertRequest("super-admin", "ca", "kubernetes-super-admin",
                    organizations=("system:masters",), client=True),
        CertRequest("kube-proxy", "ca", "system:kube-proxy", client=True),
        CertRequest("lb-healthcheck", "ca", "provisioner-lb-healthcheck", client=True),
        CertRequest("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client",
                    client=True),
    ]
    for h in hosts:
        ip = str(h.address)
        if h.machine.is_etcd:
            certs.append(CertRequest(f"etcd/server-{h.name}", "etcd/ca", h.name,
                                     dns_names=(h.name, "localhost"),
                                     ip_addresses=(ip, "127.0.0.1"), server=True, client=True))
            certs.append(CertRequest(f"etcd/peer-{h.name}", "etcd/ca", h.name,
                                     dns_names=(h.name,), ip_addresses=(ip,), server=True,
                                     client=True))
        if h.machine.is_node:
            certs.append(CertRequest(f"kubelet/{h.name}-client", "ca", f"system:node:{h.name}",
                                     organizations=("system:nodes",), client=True))
            certs.append(CertRequest(f"kubelet/{h.name}-serving", "ca", f"system:node:{h.name}",
                                     organizations=("system:nodes",), dns_names=(h.name,),
                                     ip_addresses=(ip,), server=True))
    return PkiPlan(
        cas=(CARequest("ca", "kubernetes-ca"), CARequest("etcd/ca", "etcd-ca"),
             CARequest("front-proxy-ca", "kubernetes-front-proxy-ca")),
        certs=tuple(certs),
    )


class PhaseSelectionError(ValueError):
    """``--only``/``--skip`` named a phase that does not exist."""


def select_phases(plan: Plan, only: list[str] | None, skip: list[str] | None
                  ) -> tuple[Phase, ...]:
    """The phases to run, in order: ``only`` (phases or sub-phases) minus ``skip``."""
    known = {p.name: p for p in plan.all_phases()}
    for opt, names in (("--only", only), ("--skip", skip)):
        for n in names or []:
            if n not in known:
                raise PhaseSelectionError(
                    f"{opt} {n!r}: no such phase; known phases: "
                    + ", ".join(p.name for p in plan.phases)
                    + " (sub-phases: phase/component, see `provisioner plan`)"
                )
    chosen: list[Phase] = []
    skipped = set(skip or [])
    for p in plan.all_phases():
        parent = p.name.split("/")[0]
        wanted = only is None or p.name in only or parent in (only or [])
        if p.name in skipped or parent in skipped:
            continue
        if wanted:
            chosen.append(p)
    return tuple(chosen)
