"""Cross-field rules of the cluster spec, each reporting the field path and the fix.

Scope: everything pydantic cannot see from one field alone: counts and quorum, host
references, address plans and CIDR overlaps, choices that the provider cannot honour, and
settings that only make sense together. ``check(cluster)`` returns every issue at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network

from provisioner.spec.errors import SpecIssue, shown
from provisioner.spec.models import (
    BACKUP_MAX_AGE_HOURS,
    Cluster,
    NspawnProvider,
    StaticProvider,
    VagrantProvider,
)
from provisioner.spec.names import dns_name_problem, is_ip
from provisioner.spec.topology import (
    Role,
    control_plane_count,
    control_plane_slots,
    etcd_dedicated_count,
    generated,
    machine_network,
    machines,
    pod_subnet_indexes,
)
from provisioner.versions import manifest

Rule = Callable[[Cluster], Iterator[SpecIssue]]
_RULES: list[Rule] = []
_QUORUM_SIZES = (1, 3, 5)
_SMALLEST_SUBNET = 29  # prefix length: network, host side, broadcast and 5 machines
# kube-controller-manager refuses node subnets more than 16 bits longer than the cluster CIDR.
_MAX_NODE_MASK_DIFF = 16
# Suggestions by similarity (difflib) are made for this many names at most: the cost of each
# is the number of names it is compared with, and a huge spec must still answer at once.
_SUGGEST_LIMIT = 50
_SUGGEST_AMONG = 2000


def rule(fn: Rule) -> Rule:
    """Register a rule; rules run in definition order."""
    _RULES.append(fn)
    return fn


def check(cluster: Cluster) -> list[SpecIssue]:
    """Run every rule; host-address rules run only when host references are sound."""
    issues: list[SpecIssue] = []
    for r in _RULES:
        if r in _NEEDS_SOUND_HOSTS and issues_about_hosts(issues):
            continue
        issues.extend(r(cluster))
    return issues


def issues_about_hosts(issues: list[SpecIssue]) -> bool:
    """True when earlier issues make host resolution unreliable."""
    roots = ("spec.hosts", "spec.controlPlane", "spec.workers", "spec.etcd", "spec.provider")
    return any(i.path.startswith(roots) and not i.path.startswith("spec.etcd.backup")
               for i in issues)


def _quorum_issue(path: str, what: str, n: int, unit: str = "members") -> Iterator[SpecIssue]:
    if n == 0:
        yield SpecIssue(path, f"{what} needs at least 1 {unit.removesuffix('s')}, got 0",
                        "use 1, 3 or 5")
    elif n % 2 == 0:
        near = [str(s) for s in (n - 1, n + 1) if s in _QUORUM_SIZES] or ["5"]
        yield SpecIssue(
            path,
            f"{what} has an even number of {unit} ({n}): etcd quorum is a majority, so {n} "
            f"tolerates no more failures than {n - 1}",
            f"use {' or '.join(near)} (supported: 1, 3, 5)",
        )
    elif n not in _QUORUM_SIZES:
        yield SpecIssue(path, f"{what} has {n} {unit}; supported sizes are 1, 3 and 5",
                        "use 5 for the highest availability")


@rule
def version_supported(cluster: Cluster) -> Iterator[SpecIssue]:
    """The Kubernetes version must be in the versions manifest."""
    v = cluster.spec.kubernetes_version
    if v is None:
        return
    supported = manifest.supported_versions()
    bare = v.removeprefix("v")
    if bare in supported:
        if bare != v:
            yield SpecIssue("spec.kubernetesVersion", f"{shown(v)} has a leading 'v'",
                            f"write {shown(bare)}")
        return
    minor = ".".join(bare.split(".", 2)[:2])[:20]
    same = [s for s in supported if s.startswith(minor + ".")]
    hint = (f"choose a {minor} release: {', '.join(same)}" if same
            else f"choose one of: {', '.join(supported)}")
    if bare != v:
        hint = f"drop the leading 'v' and {hint}"
    what = f"{shown(v)} is not a supported version"
    oldest = min(manifest.minors(), key=_minor_key)
    if re.fullmatch(r"\d+\.\d+", minor) and _minor_key(minor) < _minor_key(oldest):
        what = (f"{shown(v)} is past its end of life upstream (Kubernetes {minor}); the oldest "
                f"supported minor is {oldest}")
    yield SpecIssue("spec.kubernetesVersion", what, hint)


def _minor_key(minor: str) -> tuple[int, ...]:
    return tuple(int(x) for x in minor.split("."))


@rule
def control_plane_shape(cluster: Cluster) -> Iterator[SpecIssue]:
    """Odd control-plane count (1, 3, 5); count and host list agree."""
    cp = cluster.spec.control_plane
    if cp.hosts is not None and cp.count is not None and cp.count != len(cp.hosts):
        yield SpecIssue("spec.controlPlane.count",
                        f"count is {cp.count} but {len(cp.hosts)} hosts are listed",
                        "drop count or make it match the host list")
        return
    path = "spec.controlPlane.hosts" if cp.hosts is not None else "spec.controlPlane.count"
    n = control_plane_count(cluster)
    if cluster.spec.etcd.placement == "controlPlane":
        yield from _quorum_issue(path, "the control plane (with stacked etcd)", n, "nodes")
    elif n == 0:
        yield SpecIssue(path, "the control plane needs at least 1 node", "use 1, 3 or 5")
    elif n % 2 == 0 or n not in _QUORUM_SIZES:
        yield SpecIssue(path, f"{n} control-plane nodes; supported counts are 1, 3 and 5",
                        "use 1, 3 or 5 (1 leader + 2 or 4 standbys)")


@rule
def etcd_shape(cluster: Cluster) -> Iterator[SpecIssue]:
    """Dedicated etcd: odd member count; stacked etcd takes no count or hosts."""
    etcd = cluster.spec.etcd
    if etcd.placement == "controlPlane":
        if etcd.count is not None:
            yield SpecIssue("spec.etcd.count", "count is only for placement 'dedicated'; stacked "
                            "etcd has one member per control-plane node",
                            "remove spec.etcd.count or set spec.etcd.placement: dedicated")
        if etcd.hosts is not None:
            yield SpecIssue("spec.etcd.hosts", "hosts are only for placement 'dedicated'",
                            "remove spec.etcd.hosts or set spec.etcd.placement: dedicated")
        return
    if etcd.hosts is not None and etcd.count is not None and etcd.count != len(etcd.hosts):
        yield SpecIssue("spec.etcd.count", f"count is {etcd.count} but {len(etcd.hosts)} hosts "
                        "are listed", "drop count or make it match the host list")
        return
    path = "spec.etcd.hosts" if etcd.hosts is not None else "spec.etcd.count"
    yield from _quorum_issue(path, "the dedicated etcd group", etcd_dedicated_count(cluster))


@rule
def workers_shape(cluster: Cluster) -> Iterator[SpecIssue]:
    """Worker count and host list agree."""
    w = cluster.spec.workers
    if w.hosts is not None and w.count is not None and w.count != len(w.hosts):
        yield SpecIssue("spec.workers.count", f"count is {w.count} but {len(w.hosts)} hosts are "
                        "listed", "drop count or make it match the host list")


@rule
def hosts_listed(cluster: Cluster) -> Iterator[SpecIssue]:
    """Static clusters list their hosts; names and addresses are unique; references exist."""
    spec = cluster.spec
    if isinstance(spec.provider, StaticProvider) and not spec.hosts:
        yield SpecIssue("spec.hosts", "the static provider needs the hosts listed",
                        "add entries with name and address under spec.hosts")
        return
    seen_names: dict[str, int] = {}
    seen_addrs: dict[IPv4Address, int] = {}
    for i, h in enumerate(spec.hosts):
        if h.name in seen_names:
            yield SpecIssue(f"spec.hosts[{i}].name", f"duplicate host name {h.name!r} (also "
                            f"spec.hosts[{seen_names[h.name]}])", "give each host its own name")
        else:
            seen_names[h.name] = i
        if h.address in seen_addrs:
            yield SpecIssue(f"spec.hosts[{i}].address", f"duplicate address {h.address} (also "
                            f"spec.hosts[{seen_addrs[h.address]}])",
                            "give each host its own address")
        else:
            seen_addrs[h.address] = i
        if h.address.is_loopback or h.address.is_unspecified or h.address.is_multicast:
            yield SpecIssue(f"spec.hosts[{i}].address", f"{h.address} is a loopback, unspecified "
                            "or multicast address: other hosts cannot reach it",
                            "use the host's address on the network the hosts share")
    if not spec.hosts:
        for field in ("controlPlane", "workers", "etcd"):
            if getattr(spec, _snake(field)).hosts is not None:
                yield SpecIssue(f"spec.{field}.hosts", "host names are given but spec.hosts is "
                                "empty", "list the hosts under spec.hosts or use count")
        return
    yield from _role_groups(cluster, list(seen_names))


def _role_groups(cluster: Cluster, names: list[str]) -> Iterator[SpecIssue]:
    """Role-group references of listed hosts: known, one group per host, nothing left over."""
    spec = cluster.spec
    assigned: dict[str, str] = {}
    known = set(names)
    suggested = 0
    cp = spec.control_plane
    if cp.hosts is None:
        ncp = control_plane_count(cluster)
        if ncp > len(names):
            yield SpecIssue("spec.controlPlane.count", f"count {ncp} exceeds the {len(names)} "
                            "listed hosts", "list the control-plane hosts by name")
        # Without a list, the control plane is the first `count` hosts (topology.layout).
        implicit = f"the control plane (the first {ncp} of spec.hosts)"
        assigned.update(dict.fromkeys(names[:ncp], implicit))
    for field in ("controlPlane", "etcd", "workers"):
        refs = getattr(spec, _snake(field)).hosts
        group = f"spec.{field}.hosts"
        for j, name in enumerate(refs or []):
            path = f"{group}[{j}]"
            if name not in known:
                suggested += 1
                close = (difflib.get_close_matches(name, names, n=1)
                         if suggested <= _SUGGEST_LIMIT and len(names) <= _SUGGEST_AMONG
                         else [])
                yield SpecIssue(path, f"{name!r} is not in spec.hosts",
                                f"did you mean {close[0]!r}?" if close
                                else "add the host to spec.hosts or fix the name")
            elif assigned.get(name) == group:
                yield SpecIssue(path, f"host {name!r} is listed twice in {group}",
                                "list each host once")
            elif name in assigned:
                fix = ("list spec.controlPlane.hosts by name" if assigned[name].startswith("the")
                       else "keep it in one group")
                yield SpecIssue(path, f"host {name!r} is already in {assigned[name]}",
                                f"a host has one role group (control-plane nodes run kubelet "
                                f"too): {fix}")
            else:
                assigned[name] = group
    etcd = spec.etcd
    if etcd.placement == "dedicated" and etcd.hosts is None:
        yield SpecIssue("spec.etcd.hosts", "dedicated etcd on listed hosts needs the etcd "
                        "hosts named", "list them under spec.etcd.hosts (count alone only "
                        "works for generated machines)")
    rest = [n for n in names if n not in assigned]
    w = spec.workers
    if w.hosts is None and w.count is not None and w.count != len(rest):
        yield SpecIssue("spec.workers.count", f"count is {w.count} but {len(rest)} listed hosts "
                        "are left for workers", "drop count (workers are the hosts in no other "
                        "group) or name them in spec.workers.hosts")
    if w.hosts is not None:
        index = {n: i for i, n in reversed(list(enumerate(names)))}
        for n in rest:
            yield SpecIssue(f"spec.hosts[{index[n]}]", f"host {n!r} is in no role group",
                            "add it to spec.workers.hosts (or another group) or remove it")


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


@rule
def static_needs_key(cluster: Cluster) -> Iterator[SpecIssue]:
    """Static hosts need an SSH key: there is no provider to make one."""
    spec = cluster.spec
    if not isinstance(spec.provider, StaticProvider) or spec.ssh.private_key_file is not None:
        return
    for i, h in enumerate(spec.hosts):
        if h.ssh is None or h.ssh.private_key_file is None:
            yield SpecIssue(f"host {h.name}", "no SSH private key for a static host",
                            f"set spec.ssh.privateKeyFile (or spec.hosts[{i}].ssh.privateKeyFile)")


@rule
def generated_fit(cluster: Cluster) -> Iterator[SpecIssue]:
    """Generated machine names and addresses fit their limits."""
    if not generated(cluster):
        return
    net = machine_network(cluster)
    provider = cluster.spec.provider
    assert net is not None and isinstance(provider, NspawnProvider | VagrantProvider)
    if net.prefixlen > _SMALLEST_SUBNET:
        return  # provider_network reports the subnet itself
    if (provider.control_plane_slots is not None
            and provider.control_plane_slots < control_plane_count(cluster)):
        yield SpecIssue("spec.provider.controlPlaneSlots",
                        f"{provider.control_plane_slots} addresses kept for "
                        f"{control_plane_count(cluster)} control-plane nodes",
                        "raise it to at least controlPlane.count (or remove it); raising it "
                        "on a running cluster moves every other machine")
        return
    total = control_plane_slots(cluster) + etcd_dedicated_count(cluster) + \
        (cluster.spec.workers.count or 0)
    last = int(net.network_address) + provider.first_host_offset + total - 1
    if last >= int(net.broadcast_address):
        beyond = str(IPv4Address(last)) if last < 2**32 else "past the end of IPv4"
        yield SpecIssue("spec.provider.subnet", f"{total} machines from offset "
                        f"{provider.first_host_offset} do not fit in {net} (the last would be "
                        f"{beyond})",
                        "use a larger subnet or a smaller firstHostOffset")


@rule
def provider_network(cluster: Cluster) -> Iterator[SpecIssue]:
    """Machines of nspawn/vagrant sit inside the provider subnet, off its reserved addresses."""
    net = machine_network(cluster)
    if net is None:
        return
    if net.prefixlen > _SMALLEST_SUBNET:
        yield SpecIssue("spec.provider.subnet", f"{net} is too small for machines",
                        "use a /24 such as 192.168.56.0/24")
        return
    gateway = IPv4Address(int(net.network_address) + 1)
    for i, h in enumerate(cluster.spec.hosts):
        if h.address not in net:
            yield SpecIssue(f"spec.hosts[{i}].address", f"{h.address} is outside the provider "
                            f"subnet {net}", f"pick an address in {net}")
        elif (what := _reserved(net, h.address)) is not None:
            yield SpecIssue(f"spec.hosts[{i}].address", f"{h.address} is {what} of {net}",
                            f"pick an address from {IPv4Address(int(gateway) + 1)} on")
    if isinstance(cluster.spec.provider, NspawnProvider):
        for i, a in enumerate(cluster.spec.provider.host_aliases):
            # Only the project's own network: the bridge (gateway) or a machine.
            if a.address not in net:
                yield SpecIssue(f"spec.provider.hostAliases[{i}].address",
                                f"{a.address} is outside the provider subnet {net}",
                                f"use an address of {net}, e.g. the bridge's {gateway}")


def _reserved(net: IPv4Network, addr: IPv4Address) -> str | None:
    """What a reserved address of a machine subnet is for, or None."""
    if addr == net.network_address:
        return "the network address"
    if addr == net.broadcast_address:
        return "the broadcast address"
    if addr == IPv4Address(int(net.network_address) + 1):
        return "the host's own address (bridge or host-only network)"
    return None


def _host_network_in(cluster: Cluster, cidr: IPv4Network) -> str | None:
    """What of the hosts' network ``cidr`` overlaps, described for a message, or None: the
    machine subnet, or the first host address inside it."""
    net = machine_network(cluster)
    if net is not None:
        return f"the machine subnet {net} (spec.provider.subnet)" if cidr.overlaps(net) else None
    return next((f"the address {h.address} of host {h.name} (spec.hosts[{i}].address)"
                 for i, h in enumerate(cluster.spec.hosts) if h.address in cidr), None)


@rule
def cidrs(cluster: Cluster) -> Iterator[SpecIssue]:
    """Pod, service and host networks are disjoint and large enough."""
    nw = cluster.spec.network
    pod, svc = nw.pod_cidr, nw.service_cidr
    if pod.overlaps(svc):
        yield SpecIssue("spec.network.podCIDR", f"{pod} overlaps spec.network.serviceCIDR {svc}",
                        "choose disjoint ranges, e.g. podCIDR 10.244.0.0/16 and serviceCIDR "
                        "10.96.0.0/12")
    for name, cidr in (("podCIDR", pod), ("serviceCIDR", svc)):
        what = _host_network_in(cluster, cidr)
        if what is not None:
            yield SpecIssue(f"spec.network.{name}", f"{cidr} overlaps {what}",
                            "pick a range the hosts do not use")
        if cidr.is_loopback or cidr.is_multicast or cidr.is_link_local:
            yield SpecIssue(f"spec.network.{name}", f"{cidr} is a loopback, link-local or "
                            "multicast range", "use a private range such as 10.0.0.0/8")
    if svc.prefixlen < 12:
        yield SpecIssue("spec.network.serviceCIDR", f"{svc} is larger than kube-apiserver allows "
                        "(at most 2^20 addresses)", "use a /12 or smaller, e.g. 10.96.0.0/12")
    if svc.prefixlen > 28:
        yield SpecIssue("spec.network.serviceCIDR", f"{svc} leaves too few service addresses",
                        "use a /24 or larger")
    if nw.node_cidr_mask_size <= pod.prefixlen:
        fix = (f"use a value above {pod.prefixlen}, e.g. {min(pod.prefixlen + 8, 28)}"
               if pod.prefixlen < 28 else "use a larger podCIDR, e.g. 10.244.0.0/16")
        yield SpecIssue("spec.network.nodeCIDRMaskSize", f"each node's /{nw.node_cidr_mask_size} "
                        f"pod subnet must be smaller than podCIDR {pod} (a longer prefix)", fix)
    elif nw.node_cidr_mask_size - pod.prefixlen > _MAX_NODE_MASK_DIFF:
        yield SpecIssue("spec.network.nodeCIDRMaskSize", f"/{nw.node_cidr_mask_size} is more "
                        f"than {_MAX_NODE_MASK_DIFF} bits longer than podCIDR {pod}; "
                        "kube-controller-manager refuses that",
                        f"use at most {pod.prefixlen + _MAX_NODE_MASK_DIFF} or a smaller podCIDR")


@rule
def pod_capacity(cluster: Cluster) -> Iterator[SpecIssue]:
    """The pod CIDR holds one node subnet per node."""
    nw = cluster.spec.network
    pod = nw.pod_cidr
    if nw.node_cidr_mask_size <= pod.prefixlen:
        return  # cidrs reports it
    indexes = pod_subnet_indexes(cluster, machines(cluster))
    nodes = max(indexes.values(), default=-1) + 1  # kept control-plane slots count too
    subnets = 2 ** (nw.node_cidr_mask_size - pod.prefixlen)
    if nodes > subnets:
        yield SpecIssue("spec.network.podCIDR", f"{pod} holds {subnets} node subnets of "
                        f"/{nw.node_cidr_mask_size} but the cluster has {nodes} nodes",
                        "use a larger podCIDR or a larger nodeCIDRMaskSize")


@rule
def kube_proxy_mode(cluster: Cluster) -> Iterator[SpecIssue]:
    """IPVS needs kernel support the nspawn host does not have."""
    if cluster.spec.network.kube_proxy_mode == "ipvs" and isinstance(cluster.spec.provider,
                                                                     NspawnProvider):
        yield SpecIssue("spec.network.kubeProxyMode", "ipvs is not available on nspawn machines: "
                        "they share the host kernel, which has no IPVS here",
                        "set kubeProxyMode: iptables (or use the vagrant provider for ipvs)")


@rule
def unproven_addons(cluster: Cluster) -> Iterator[SpecIssue]:
    """Addons whose images the lab cannot build are refused, not rendered and hoped for."""
    spec = cluster.spec
    if spec.dns.node_local_dns.enabled:
        yield SpecIssue("spec.dns.nodeLocalDNS.enabled", "nodelocaldns is not supported yet: "
                        "its image (k8s-dns-node-cache, Go module k8s.io/dns) cannot be built "
                        "here, so it is not proven", "set enabled: false (CoreDNS serves the "
                        "cluster's DNS; the supported DNS setup is CoreDNS alone)")
    unproven = {"dashboard": "the dashboard needs its web front end built, which the lab "
                             "cannot do",
                "logging": "fluent-bit is C with no source build in the lab"}
    for name, why in unproven.items():
        if getattr(spec.addons, name).enabled:
            yield SpecIssue(f"spec.addons.{name}.enabled", f"the {name} addon is not supported "
                            f"yet: {why}, so it is not proven", "set enabled: false (supported "
                            "addons: metricsServer)")


@rule
def dns_addresses(cluster: Cluster) -> Iterator[SpecIssue]:
    """Node-local DNS sits on a link-local address; upstreams are outside cluster ranges."""
    dns, nw = cluster.spec.dns, cluster.spec.network
    nl = dns.node_local_dns
    if nl.enabled and not nl.address.is_link_local:
        yield SpecIssue("spec.dns.nodeLocalDNS.address", f"{nl.address} is not link-local",
                        "use an address in 169.254.0.0/16, e.g. 169.254.20.10")
    for i, up in enumerate(dns.upstream_servers):
        if up.is_loopback or up.is_unspecified:
            yield SpecIssue(f"spec.dns.upstreamServers[{i}]", f"{up} is a loopback address: "
                            "inside the CoreDNS pod it is CoreDNS itself, so queries would loop",
                            "name the resolver's real address (not a local stub like 127.0.0.53)")
        elif up in nw.service_cidr or up in nw.pod_cidr:
            yield SpecIssue(f"spec.dns.upstreamServers[{i}]", f"{up} is inside the cluster's own "
                            "pod or service range and would loop", "name an external resolver")


@rule
def load_balancer(cluster: Cluster) -> Iterator[SpecIssue]:
    """Each load-balancer mode gets exactly the settings it uses."""
    lb, spec = cluster.spec.load_balancer, cluster.spec
    if lb.mode == "vip" and lb.vip is None:
        yield SpecIssue("spec.loadBalancer.vip", "mode 'vip' needs a virtual IP",
                        "set vip to a free address on the control-plane network")
    if lb.mode != "vip" and lb.vip is not None:
        yield SpecIssue("spec.loadBalancer.vip", f"vip is only used in mode 'vip' (mode is "
                        f"{lb.mode!r})", "remove vip or set mode: vip")
    if lb.mode == "external":
        if not lb.address:
            yield SpecIssue("spec.loadBalancer.address", "mode 'external' needs the address of "
                            "your load balancer", "set address to its host name or IP")
        elif (problem := _lb_address_problem(lb.address)) is not None:
            yield SpecIssue("spec.loadBalancer.address", f"{shown(lb.address)} is neither an "
                            f"IP address nor a DNS name: it {problem}", "write e.g. "
                            "api.example.com or 10.0.0.10 (no scheme, no port: the port is "
                            "spec.loadBalancer.port)")
    elif lb.address:
        yield SpecIssue("spec.loadBalancer.address", "address is only used in mode 'external'",
                        "remove address or set mode: external")
    if lb.mode != "external" and lb.port == spec.apiserver.secure_port:
        yield SpecIssue("spec.loadBalancer.port", f"port {lb.port} is also "
                        "spec.apiserver.securePort; haproxy and kube-apiserver would collide",
                        "use another port for one of them, e.g. "
                        f"{_free_port(cluster, {})} for the load balancer")


@rule
def vip_free(cluster: Cluster) -> Iterator[SpecIssue]:
    """The VIP is a free address of the machine network."""
    lb = cluster.spec.load_balancer
    if lb.mode != "vip" or lb.vip is None:
        return
    net = machine_network(cluster)
    if net is not None and lb.vip not in net:
        yield SpecIssue("spec.loadBalancer.vip", f"{lb.vip} is outside the machine "
                        f"subnet {net}", f"pick a free address in {net}")
    elif net is not None and (what := _reserved(net, lb.vip)) is not None:
        yield SpecIssue("spec.loadBalancer.vip", f"{lb.vip} is {what} of {net}",
                        "pick a free address")
    for m in machines(cluster):
        if m.address == lb.vip:
            yield SpecIssue("spec.loadBalancer.vip", f"{lb.vip} is already the address "
                            f"of host {m.name}", "pick a free address")


@rule
def registries(cluster: Cluster) -> Iterator[SpecIssue]:
    """Mirrors are unique per registry; credentials come in pairs."""
    reg = cluster.spec.registries
    seen: set[str] = set()
    for i, m in enumerate(reg.mirrors):
        if m.registry in seen:
            yield SpecIssue(f"spec.registries.mirrors[{i}].registry", f"{m.registry} has two "
                            "mirror entries", "merge their endpoints into one entry")
        seen.add(m.registry)
    hosts: set[str] = set()
    for i, p in enumerate(reg.private):
        path = f"spec.registries.private[{i}]"
        if p.host in hosts:
            yield SpecIssue(f"{path}.host", f"{p.host} is listed twice", "keep one entry")
        hosts.add(p.host)
        if p.username is not None and p.password_file is None:
            yield SpecIssue(f"{path}.passwordFile", f"username {shown(p.username)} is set but "
                            "passwordFile is missing", "set passwordFile to a file holding the "
                            "password, or remove username for anonymous pulls")
        if p.username is None and p.password_file is not None:
            yield SpecIssue(f"{path}.username", "passwordFile is set but username is missing",
                            "set username, or remove passwordFile for anonymous pulls")
        if p.insecure_skip_verify and p.ca_file is not None:
            yield SpecIssue(f"{path}.insecureSkipVerify", "caFile is given, so verification can "
                            "stay on", "remove insecureSkipVerify")


@rule
def artifacts(cluster: Cluster) -> Iterator[SpecIssue]:
    """Each artifact source names exactly what it needs."""
    a = cluster.spec.artifacts
    if a.source == "mirror" and a.mirror_url is None:
        yield SpecIssue("spec.artifacts.mirrorURL", "source 'mirror' needs mirrorURL",
                        "set mirrorURL to the HTTP mirror's base URL")
    if a.source != "mirror" and a.mirror_url is not None:
        yield SpecIssue("spec.artifacts.mirrorURL", f"mirrorURL is unused with source {a.source!r}",
                        "remove it or set source: mirror")
    if a.source == "local" and a.path is None:
        yield SpecIssue("spec.artifacts.path", "source 'local' needs path",
                        "set path to a directory or a bundle .tar made by `provisioner artifacts "
                        "bundle`")
    if a.source != "local" and a.path is not None:
        yield SpecIssue("spec.artifacts.path", f"path is unused with source {a.source!r}",
                        "remove it or set source: local")


@rule
def etcd_backup(cluster: Cluster) -> Iterator[SpecIssue]:
    """verify must know how old the newest snapshot may be: an OnCalendar expression says
    so in maxAgeHours, and a keyword schedule's maxAgeHours leaves room for one interval."""
    backup = cluster.spec.etcd.backup
    if backup is None:
        return
    path = "spec.etcd.backup.maxAgeHours"
    interval = backup.interval_hours
    if interval is None and backup.max_age_hours is None:
        yield SpecIssue(path, f"required with the OnCalendar schedule {shown(backup.schedule)}: "
                        "verify's etcd-backup-age cannot tell how old the newest snapshot may "
                        "be", "set maxAgeHours to the longest gap between two runs plus an "
                        "hour or two (e.g. 7 for '*-*-* 00/6:00:00'), or use schedule hourly, "
                        "daily or weekly, which have defaults")
    elif interval is not None and backup.max_age_hours is not None and (
            backup.max_age_hours <= interval):
        yield SpecIssue(path, f"{backup.max_age_hours} hours is not longer than the "
                        f"{backup.schedule} schedule's {interval}: verify would fail between "
                        "two backups", f"use more than {interval}, or leave it out (default "
                        f"{BACKUP_MAX_AGE_HOURS[backup.schedule]})")


def _lb_address_problem(address: str) -> str | None:
    """What is wrong with an external load balancer's address, or None."""
    if is_ip(address):
        return None if ":" not in address else "is an IPv6 address: the cluster is IPv4"
    if "://" in address:
        return "is a URL"
    if ":" in address:
        return "has a port, or is an IPv6 address"
    return dns_name_problem(address)


@rule
def load_balancer_ranges(cluster: Cluster) -> Iterator[SpecIssue]:
    """The VIP or the external load balancer's address is not a pod or service address:
    inside those ranges kube-proxy and the CNI would route it into the cluster."""
    lb, nw = cluster.spec.load_balancer, cluster.spec.network
    if lb.mode == "vip" and lb.vip is not None:
        field, address = "vip", lb.vip
    elif lb.mode == "external" and lb.address and is_ip(lb.address) and ":" not in lb.address:
        field, address = "address", IPv4Address(lb.address)
    else:
        return
    for name, cidr in (("podCIDR", nw.pod_cidr), ("serviceCIDR", nw.service_cidr)):
        if address in cidr:
            yield SpecIssue(f"spec.loadBalancer.{field}", f"{address} is inside "
                            f"spec.network.{name} {cidr}: traffic to it would be routed into "
                            "the cluster network", "use an address of the hosts' network, "
                            f"outside {cidr}")


@rule
def vagrant_memory(cluster: Cluster) -> Iterator[SpecIssue]:
    """Vagrant VMs all run kubelet and most run the control plane. The guest kernel keeps
    about 75 MiB of what the VM is given, and preflight wants 1500 MiB usable on a
    control-plane node, so 1664 MiB at least."""
    provider = cluster.spec.provider
    if isinstance(provider, VagrantProvider) and provider.memory_mib < 1664:
        yield SpecIssue("spec.provider.memoryMib", f"{provider.memory_mib} MiB is too little "
                        "for a control-plane VM (at least 1664 MiB: preflight wants 1500 MiB "
                        "usable)", "set memoryMib: 2048")


@rule
def vagrant_networks(cluster: Cluster) -> Iterator[SpecIssue]:
    """The libvirt management network is separate from the private subnet and the cluster's
    pod and service ranges, and large enough for DHCP."""
    provider = cluster.spec.provider
    if not isinstance(provider, VagrantProvider):
        return
    mgmt = provider.management_subnet
    path = "spec.provider.managementSubnet"
    if mgmt.prefixlen > _SMALLEST_SUBNET:
        yield SpecIssue(path, f"{mgmt} is too small for DHCP leases of the VMs",
                        "use a /24 such as 192.168.121.0/24")
    if mgmt.overlaps(provider.subnet):
        yield SpecIssue(path, f"{mgmt} overlaps the private subnet {provider.subnet} "
                        "(spec.provider.subnet)", "use disjoint ranges, e.g. 192.168.56.0/25 "
                        "and 192.168.56.128/25, or the default 192.168.121.0/24")
    nw = cluster.spec.network
    for name, cidr in (("podCIDR", nw.pod_cidr), ("serviceCIDR", nw.service_cidr)):
        if cidr.overlaps(mgmt):
            yield SpecIssue(f"spec.network.{name}", f"{cidr} overlaps the management network "
                            f"{mgmt} (spec.provider.managementSubnet)",
                            "pick a range the VMs do not use")


# Spec fields that set the port a component listens on; its other ports are fixed and
# declared on the component class (components.*.ports).
_PORT_FIELDS = {"kube-apiserver": "spec.apiserver.securePort", "haproxy": "spec.loadBalancer.port"}
_PORT_FIXES = {
    "spec.apiserver.securePort": "use another port for kube-apiserver, e.g. {free}",
    "spec.loadBalancer.port": "use another port for the load balancer, e.g. {free}",
    "ssh": "run sshd on another port (22 is usual) and set it here",
}


@rule
def port_clashes(cluster: Cluster) -> Iterator[SpecIssue]:
    """No two programs on one host listen on the same port: the load balancer, the
    apiserver, sshd, and the fixed ports of etcd, kubelet, kube-proxy and the controllers."""
    from provisioner.components import ALL  # components import the spec: import at use

    spec = cluster.spec
    ssh_field = {h.name: f"spec.hosts[{i}].ssh.port" for i, h in enumerate(spec.hosts)
                 if h.ssh is not None and h.ssh.port is not None}
    reported: set[tuple[str, int]] = set()
    seen: set[tuple[frozenset[Role], int, str]] = set()
    for m in machines(cluster):
        # Hosts of one role set and SSH port listen on the same ports: look at one of them.
        shape = (m.roles, m.ssh_port, ssh_field.get(m.name, ""))
        if shape in seen:
            continue
        seen.add(shape)
        # port -> [(program, the field that sets it, or "" when the port is fixed)]
        bound: dict[int, list[tuple[str, str]]] = {}
        bound.setdefault(m.ssh_port, []).append(("sshd", ssh_field.get(m.name, "spec.ssh.port")))
        for c in ALL:
            if not c.runs_on(cluster, m):
                continue
            for port in c.listen_ports(cluster):
                bound.setdefault(port, []).append((c.name, _PORT_FIELDS.get(c.name, "")))
        for port, users in sorted(bound.items()):
            fields = {f for _, f in users if f}
            if len(users) < 2 or not fields or fields == set(_PORT_FIELDS.values()):
                continue  # load balancer vs apiserver: reported by load_balancer
            for program, field in users:
                if not field or (field, port) in reported:
                    continue
                reported.add((field, port))
                others = ", ".join(p for p, f in users if (p, f) != (program, field))
                fix = _PORT_FIXES["ssh" if program == "sshd" else field]
                yield SpecIssue(field, f"port {port} ({program}) is also the port of {others} "
                                f"on host {m.name}", fix.format(free=_free_port(cluster, bound)))


def _free_port(cluster: Cluster, bound: dict[int, list[tuple[str, str]]]) -> int:
    """A port to suggest: none of ``bound`` (one host's), of the spec's configured ports
    (load balancer, apiserver, SSH) or of any component's fixed ports."""
    from provisioner.components import ALL  # components import the spec: import at use

    spec = cluster.spec
    taken = {*bound, spec.load_balancer.port, spec.apiserver.secure_port, spec.ssh.port,
             *(h.ssh.port for h in spec.hosts if h.ssh is not None and h.ssh.port),
             *(p for c in ALL if c.name not in _PORT_FIELDS for p in c.ports)}
    return next(p for p in (8443, 6443, 9443, 7443, 16443, 18443) if p not in taken)


# Rules that resolve machines; skipped while host references themselves are broken.
_NEEDS_SOUND_HOSTS: frozenset[Rule] = frozenset({pod_capacity, vip_free, port_clashes})
