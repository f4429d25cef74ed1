"""Render: certificates against their CAs and SANs, rendered flags against the real flag
lists of the pinned minor, file modes, endpoints, pod routes and phase selection."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from cryptography import x509

from provisioner.components import File
from provisioner.pki import verify_issued_by
from provisioner.plan import PhaseSelectionError, Plan, build_plan, select_phases
from provisioner.render.material import prepare
from provisioner.render.tree import RenderedTree, render
from provisioner.spec import load_file
from provisioner.versions.flags import known_flags, parse_flags

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "spec.yaml").exists())
UNIT_COMPONENT = {
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kubelet": "kubelet",
    "kube-proxy": "kube-proxy",
}


def _rendered(case: str, tmp: Path) -> tuple[Plan, RenderedTree]:
    spec = GOLDEN / case / "spec.yaml"
    plan = build_plan(load_file(spec))
    material, _ = prepare(plan, tmp, spec.parent)
    return plan, render(plan, material, Path("/k"))


def _file(tree: RenderedTree, host: str, path: str) -> File:
    for f in tree.hosts[host]:
        if f.path == path:
            return f
    raise AssertionError(f"{host}:{path} not rendered")


def _cert(f: File) -> x509.Certificate:
    return x509.load_pem_x509_certificate(f.content)


def _exec_args(unit: bytes) -> list[str]:
    text = unit.decode()
    m = re.search(r"^ExecStart=(.*?)(?:\n\n|\nRestart)", text, re.S | re.M)
    assert m, text
    tokens = m.group(1).replace("\\\n", " ").split()
    return tokens[1:]


@pytest.mark.parametrize("case", CASES)
def test_rendered_flags_exist_in_pinned_minor(case: str, tmp_path: Path) -> None:
    """Every flag of every Kubernetes unit is a real flag of that component's pinned minor."""
    plan, tree = _rendered(case, tmp_path)
    checked = 0
    for host, files in tree.hosts.items():
        for f in files:
            name = Path(f.path).name.removesuffix(".service")
            if f.path.startswith("/etc/systemd/system/") and name in UNIT_COMPONENT:
                flags = parse_flags(_exec_args(f.content))
                unknown = set(flags) - known_flags(UNIT_COMPONENT[name], plan.minor)
                assert not unknown, (host, name, sorted(unknown))
                checked += 1
            if f.path == "/etc/systemd/system/etcd.service":
                etcd_minor = ".".join(plan.release.component("etcd").split(".")[:2])
                flags = parse_flags(_exec_args(f.content))
                assert not set(flags) - known_flags("etcd", etcd_minor)
    assert checked >= 2


def test_an_invalid_flag_would_be_caught() -> None:
    """The flag check can fail: a removed flag is not in the list."""
    assert "insecure-port" not in known_flags("kube-apiserver", "1.37")
    assert "container-runtime" not in known_flags("kubelet", "1.37")


@pytest.mark.parametrize("case", CASES)
def test_certificates_verify_and_carry_sans(case: str, tmp_path: Path) -> None:
    """Leaf certificates verify against their CA and not another; each control-plane node's
    apiserver pair carries the common SANs plus its own name and address, not the others'."""
    plan, tree = _rendered(case, tmp_path)
    cp = plan.control_plane[0].name
    ca = _cert(_file(tree, cp, "/etc/kubernetes/pki/ca.crt"))
    etcd_ca = _cert(_file(tree, cp, "/etc/kubernetes/pki/etcd/ca.crt"))
    domain = plan.cluster.spec.network.cluster_domain
    lb = plan.cluster.spec.load_balancer
    common_dns = {"kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  f"kubernetes.default.svc.{domain}", "localhost"}
    common_ips = {str(plan.kubernetes_service_ip), "127.0.0.1"}
    if lb.vip is not None:
        common_ips.add(str(lb.vip))
    extra = {str(v) for v in plan.cluster.spec.apiserver.extra_sans}
    if lb.mode == "external":
        extra.add(str(lb.address))
    serials = set()
    for host in plan.control_plane:
        api = _cert(_file(tree, host.name, "/etc/kubernetes/pki/apiserver.crt"))
        serials.add(api.serial_number)
        assert verify_issued_by(api, ca)
        assert not verify_issued_by(api, etcd_ca)
        san = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(san.get_values_for_type(x509.DNSName))
        ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
        assert common_dns | {host.name} <= dns, host.name
        assert common_ips | {str(host.address)} <= ips, host.name
        assert extra <= dns | ips, host.name
        others = [h for h in plan.control_plane if h.name != host.name]
        assert not {h.name for h in others} & dns, host.name
        assert not {str(h.address) for h in others} & ips, host.name
        # Nothing else: exactly the common names, the extra SANs and its own.
        assert dns | ips == common_dns | common_ips | extra | {host.name, str(host.address)}
    assert len(serials) == len(plan.control_plane)  # a pair of its own on each node
    for h in plan.etcd:
        server = _cert(_file(tree, h.name, "/etc/kubernetes/pki/etcd/server.crt"))
        assert verify_issued_by(server, etcd_ca) and not verify_issued_by(server, ca)
        s = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(str(h.address)) in s.get_values_for_type(x509.IPAddress)
    for h in plan.nodes:
        client = _cert(_file(tree, h.name, "/var/lib/kubelet/pki/kubelet-client.crt"))
        cn = client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == f"system:node:{h.name}"
        assert verify_issued_by(client, ca)


@pytest.mark.parametrize("case", CASES)
def test_secrets_are_marked_and_private(case: str, tmp_path: Path) -> None:
    """Every private key is a secret file with mode 0600."""
    _, tree = _rendered(case, tmp_path)
    for host, files in tree.hosts.items():
        for f in files:
            if b"PRIVATE KEY" in f.content or f.path.endswith(".key"):
                assert f.secret and f.mode == 0o600, (host, f.path)


# CIS Kubernetes Benchmark file modes: 1.1.x (control-plane specs, PKI, kubeconfigs) and
# 4.1.x (kubelet and kube-proxy service files, configs, client CA). Each reader is root.
CIS_PRIVATE = (
    re.compile(r"^/etc/kubernetes/"),
    re.compile(r"^/var/lib/kubelet/"),
    re.compile(r"^/var/lib/kube-proxy/"),
    re.compile(r"^/etc/etcd/"),
    re.compile(r"^/etc/systemd/system/(kube-|kubelet|etcd|containerd)"),
)


@pytest.mark.parametrize("case", CASES)
def test_cis_file_modes(case: str, tmp_path: Path) -> None:
    """Certificates, configs, kubeconfigs and unit files of the Kubernetes components and
    etcd are 0600 (group and others get nothing), as CIS 1.1.x and 4.1.x ask."""
    _, tree = _rendered(case, tmp_path)
    checked = 0
    for host, files in tree.hosts.items():
        for f in files:
            if any(p.match(f.path) for p in CIS_PRIVATE):
                checked += 1
                assert f.mode & 0o077 == 0, (host, f.path, oct(f.mode))
    assert checked > 10

def test_endpoints_per_lb_mode(tmp_path: Path) -> None:
    """Nodes reach the apiservers through the LB of the spec's mode."""
    plan, tree = _rendered("3cp-2w", tmp_path / "a")
    assert b"server: \"https://127.0.0.1:8443\"" in _file(
        tree, "lab-w1", "/etc/kubernetes/kubelet.conf").content
    cfg = _file(tree, "lab-w1", "/etc/haproxy/haproxy.cfg").content.decode()
    for h in plan.control_plane:
        assert f"server {h.name} {h.address}:6443 check" in cfg
    plan, tree = _rendered("5cp-dedicated-etcd", tmp_path / "b")
    assert b"server: \"https://192.168.56.200:8443\"" in _file(
        tree, "big-w1", "/etc/kubernetes/kubelet.conf").content
    assert not any(f.path.startswith("/etc/haproxy") for f in tree.hosts["big-w1"])
    assert not any(f.path.startswith("/etc/kubernetes/pki/apiserver")
                   for f in tree.hosts["big-etcd1"])


def test_bridge_cni_routes_to_every_other_node(tmp_path: Path) -> None:
    """Every node holds the same subnet->node table and skips the line for itself."""
    plan, tree = _rendered("3cp-2w", tmp_path)
    tables = set()
    for h in plan.nodes:
        tables.add(_file(tree, h.name, "/etc/provisioner/pod-routes").content)
        unit = _file(tree, h.name, "/etc/systemd/system/provisioner-pod-routes.service")
        assert f'[ "$$via" = "{h.address}" ]' in unit.content.decode()
    assert len(tables) == 1
    table = tables.pop().decode()
    for other in plan.nodes:
        assert f"{other.pod_cidr} {other.address}\n" in table
    subnets = [h.pod_cidr for h in plan.nodes]
    assert len(set(subnets)) == len(subnets)


def test_phase_selection(tmp_path: Path) -> None:
    """--only takes phases with their sub-phases; --skip removes; unknown names refused."""
    plan = build_plan(load_file(GOLDEN / "3cp-2w" / "spec.yaml"))
    names = [p.name for p in select_phases(plan, ["etcd", "lb"], None)]
    assert names == ["etcd", "etcd/etcd", "lb", "lb/haproxy"]
    names = [p.name for p in select_phases(plan, None, ["addons", "verify", "preflight"])]
    assert "addons/coredns" not in names and names[0] == "os"
    with pytest.raises(PhaseSelectionError, match="'nope'"):
        select_phases(plan, ["nope"], None)


def _kubelet_and_containerd(plan: Plan, tmp: Path, case: str) -> tuple[str, str]:
    material, _ = prepare(plan, tmp, GOLDEN / case)
    tree = render(plan, material, Path("/k"))
    host = plan.nodes[0].name
    return (_file(tree, host, "/var/lib/kubelet/config.yaml").content.decode(),
            _file(tree, host, "/etc/containerd/config.toml").content.decode())


def test_cgroup_v1_settings_only_where_the_nodes_run_v1(tmp_path: Path) -> None:
    """failCgroupV1: false (and a warning) only for nodes on cgroup v1; nspawn machines get
    the in-container settings, other providers do not."""
    cluster = load_file(GOLDEN / "3cp-2w" / "spec.yaml")  # nspawn
    v1 = build_plan(cluster, cgroup_v1=True)
    kubelet, containerd = _kubelet_and_containerd(v1, tmp_path / "a", "3cp-2w")
    assert "failCgroupV1: false" in kubelet and v1.warnings and "KEP-5573" in v1.warnings[0]
    assert "nodefs.available" in kubelet and "restrict_oom_score_adj = true" in containerd
    v2 = build_plan(cluster, cgroup_v1=False)
    kubelet, _ = _kubelet_and_containerd(v2, tmp_path / "b", "3cp-2w")
    assert "failCgroupV1" not in kubelet and v2.warnings == ()
    static = build_plan(load_file(GOLDEN / "flannel-static" / "spec.yaml"))
    assert static.cgroup_v1 is False  # not asked of this host: the hosts are elsewhere
    kubelet, containerd = _kubelet_and_containerd(static, tmp_path / "c", "flannel-static")
    assert "failCgroupV1" not in kubelet and "nodefs.available" not in kubelet
    assert "restrict_oom_score_adj" not in containerd


def test_admin_is_revocable_and_super_admin_stays_in_the_state_dir(tmp_path: Path) -> None:
    """admin is in kubeadm:cluster-admins (an RBAC binding grants it cluster-admin);
    super-admin (system:masters) is written only to the state directory, never to a host."""
    from provisioner.render.material import write_admin_kubeconfig

    spec = GOLDEN / "3cp-2w" / "spec.yaml"
    plan = build_plan(load_file(spec))
    material, _ = prepare(plan, tmp_path, spec.parent)
    tree = render(plan, material, Path("/k"))
    org = x509.NameOID.ORGANIZATION_NAME

    def orgs(name: str) -> list[str]:
        cert = x509.load_pem_x509_certificate(material.cert(name))
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(org)]

    assert orgs("admin") == ["kubeadm:cluster-admins"]
    assert orgs("super-admin") == ["system:masters"]
    super_key = material.key("super-admin")
    for host, files in tree.hosts.items():
        for f in files:
            assert "super-admin" not in f.path, (host, f.path)
            assert super_key not in f.content and material.cert("super-admin") not in f.content
    write_admin_kubeconfig(plan, material, tmp_path)
    for name in ("admin", "super-admin"):
        path = tmp_path / f"{name}.kubeconfig"
        assert path.stat().st_mode & 0o777 == 0o600
    assert b"kubernetes-super-admin" in (tmp_path / "super-admin.kubeconfig").read_bytes()


def test_membership_lives_outside_the_units_and_restarts_nothing(tmp_path: Path) -> None:
    """Growing or shrinking the control plane changes what a member starts with and which
    members an apiserver dials: both are environment files that restart no unit, and the
    units themselves name no member, so they stay the same on every membership."""
    plan, tree = _rendered("3cp-2w", tmp_path)
    members = ",".join(f"{h.name}=https://{h.address}:2380" for h in plan.etcd)
    urls = ",".join(f"https://{h.address}:2379" for h in plan.etcd)
    for h in plan.etcd:
        unit = _file(tree, h.name, "/etc/systemd/system/etcd.service").content.decode()
        assert "--initial-cluster=" not in unit and "--initial-cluster-state" not in unit
        assert unit.index("EnvironmentFile=/etc/etcd/initial-cluster.env") < unit.index(
            "EnvironmentFile=-/etc/etcd/join.env")
        env = _file(tree, h.name, "/etc/etcd/initial-cluster.env")
        assert env.restarts == () and not env.secret
        assert f"ETCD_INITIAL_CLUSTER={members}\n" in env.content.decode()
        assert "ETCD_INITIAL_CLUSTER_STATE=new\n" in env.content.decode()
    for h in plan.control_plane:
        unit = _file(tree, h.name, "/etc/systemd/system/kube-apiserver.service")
        assert "--etcd-servers=${ETCD_SERVERS}" in _exec_args(unit.content)
        assert not any(str(o.address) in unit.content.decode()
                       for o in plan.control_plane if o.name != h.name)
        env = _file(tree, h.name, "/etc/kubernetes/apiserver-etcd-servers.env")
        assert env.restarts == () and f"ETCD_SERVERS={urls}\n" in env.content.decode()
