"""The cluster spec: typed pydantic models of the ``provisioner.dev/v1alpha1`` ``Cluster`` document.

Scope: shape and per-field rules only (types, choices, ranges, formats). Rules that relate
fields to each other (CIDR overlaps, host references, counts) live in ``spec.rules`` so that
all of them are reported at once. Every user-facing option is documented on its field; the
JSON schema (``provisioner schema``) carries those descriptions.
"""

from __future__ import annotations

import difflib
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from provisioner.spec.errors import shown
from provisioner.spec.names import (
    MAX_USER,
    dns_name_problem,
    host_port_problem,
    is_ip,
    san_problem,
    ssh_user_problem,
    url_problem,
)

API_VERSION = "provisioner.dev/v1alpha1"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Generated machine names are "<cluster>-etcd5"; 20 leaves room in a 63-character label.
MAX_CLUSTER_NAME = 20


def _invalid(kind: str, message: str, hint: str) -> PydanticCustomError:
    """A field error whose fix travels in ``ctx["hint"]`` (``spec.load`` shows it as the fix)."""
    return PydanticCustomError(kind, message, {"hint": hint})


def _label_check(what: str, max_len: int, hint_extra: str = "") -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > max_len or not _DNS_LABEL.fullmatch(value):
            why = (f"is {len(value)} characters long" if len(value) > max_len
                   else "is not a valid")
            raise _invalid(
                "dns_label",
                f"{shown(value)} {why} {what}" if why.startswith("is not")
                else f"{shown(value)} {why}; a {what} has at most {max_len}",
                "use lowercase letters, digits and '-', starting and ending with a letter or "
                f"digit, at most {max_len} characters{hint_extra}",
            )
        return value

    return AfterValidator(check)


def _not_bool(value: object) -> object:
    # pydantic takes true as 1: `port: yes` (YAML 1.1's boolean) would mean port 1.
    if isinstance(value, bool):
        raise _invalid(
            "int_from_bool",
            f"expected a whole number, got {str(value).lower()}",
            "write the number (YAML reads unquoted yes, no, on, off, true and false as "
            "booleans)",
        )
    return value


def _registry_host(value: str) -> str:
    problem = host_port_problem(value)
    if problem is not None:
        raise _invalid(
            "registry_host",
            f"{shown(value)} is not a registry host: it {problem}",
            "write a lowercase host name with an optional port, e.g. 'hub.test.com' or "
            "'registry.local:5000' (no scheme, no path, no quotes)",
        )
    return value


def _alias_name(value: str) -> str:
    if is_ip(value):
        problem: str | None = "is an address; the alias is the name that maps to one"
    elif ":" in value:
        problem = "has a port"
    else:
        problem = dns_name_problem(value)
    if problem is not None:
        raise _invalid(
            "host_name",
            f"{shown(value)} is not a host name: it {problem}",
            "write the name alone, e.g. hub.test.com (/etc/hosts maps names to addresses: "
            "no port, no scheme)",
        )
    return value


def _http_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise _invalid(
            "http_url",
            f"{shown(value)} is not an http(s) URL: it {problem}",
            "write scheme, host, optional port and path, without quotes or spaces inside",
        )
    return value.rstrip("/")


def _cidr_text(value: object) -> object:
    # IPv4Network would take "10.244.0.0" (or even an int) as a /32: a CIDR must say its prefix.
    if isinstance(value, IPv4Network) or (isinstance(value, str) and "/" in value):
        return value
    raise _invalid(
        "cidr_prefix",
        f"{shown(value)} is not in CIDR form (address/prefix)",
        "write the prefix length too",
    )


def _ssh_user(value: str) -> str:
    problem = ssh_user_problem(value)
    if problem is not None:
        raise _invalid(
            "ssh_user",
            f"{shown(value)} is not a valid user name: it {problem}",
            f"use at most {MAX_USER} letters, digits, '.', '_' and '-', not starting with '-' "
            "and not all digits (a POSIX portable user name, e.g. root or debian)",
        )
    return value


def _cluster_domain(value: str) -> str:
    problem = dns_name_problem(value)
    if problem is not None:
        raise _invalid(
            "dns_name",
            f"{shown(value)} is not a DNS domain: it {problem}",
            "write lowercase labels separated by dots, e.g. cluster.local",
        )
    return value


def _extra_san(value: str) -> str:
    problem = san_problem(value)
    if problem is not None:
        raise _invalid(
            "san",
            f"{shown(value)} is neither an IP address nor a DNS name: it {problem}",
            "write a bare name or address, e.g. api.example.com, *.example.com or 10.0.0.10",
        )
    return value


# etcd's data directory on every member (components.etcd passes it as --data-dir).
ETCD_DATA_DIR = "/var/lib/etcd"
# Scheduled etcd backups (spec.etcd.backup): the schedule keywords, the hours between two of
# their runs, and the default maxAgeHours of each: the interval plus slack for the timer's
# randomized delay and a slow snapshot (a weekly one a day more: a host down on the day).
BACKUP_INTERVAL_HOURS = {"hourly": 1, "daily": 24, "weekly": 7 * 24}
BACKUP_MAX_AGE_HOURS = {"hourly": 2, "daily": 26, "weekly": 8 * 24 + 2}
MAX_SCHEDULE = 64
MAX_BACKUP_DIR = 200
# What an OnCalendar expression needs ("Mon..Fri *-*-* 02:30:00", "*-*-* 00/6:00:00",
# "Sat 04:00 Europe/Berlin"); no quote, '$', '%' (a systemd specifier), ';' or newline.
_ON_CALENDAR = re.compile(r"[A-Za-z0-9*:.,/~+_ -]+")
# One-word expressions systemd.time(7) knows; any other single word is a typo.
_CALENDAR_WORDS = ("minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually",
                   "quarterly", "semiannually")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "monday", "tuesday",
             "wednesday", "thursday", "friday", "saturday", "sunday")
_SCHEDULE_HINT = ("use hourly, daily, weekly, or a systemd OnCalendar expression (`man "
                  "systemd.time`) of letters, digits, spaces and * : . , / ~ + _ -, e.g. "
                  "'*-*-* 03:00:00' (with maxAgeHours)")
_BACKUP_DIR = re.compile(r"[A-Za-z0-9._/-]+")
# Backup directories refused, with the reason: what lives there would take the backups
# with it (the data directory is replaced by a restore and removed by a reset), or they
# are not disks (lost at reboot).
_BACKUP_DIR_REFUSED = {
    ETCD_DATA_DIR: "etcd's data directory: a restore replaces it and a reset removes it, "
                   "taking the backups along",
    "/etc": "configuration, not data",
    "/run": "a tmpfs: lost at every reboot",
    "/proc": "a kernel filesystem",
    "/sys": "a kernel filesystem",
    "/dev": "a device filesystem",
}


def _backup_schedule(value: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise _invalid("backup_schedule", "the schedule is empty", _SCHEDULE_HINT)
    if len(text) > MAX_SCHEDULE:
        raise _invalid("backup_schedule", f"{shown(value)} is {len(text)} characters long; a "
                       f"schedule has at most {MAX_SCHEDULE}", _SCHEDULE_HINT)
    if not _ON_CALENDAR.fullmatch(text):
        bad = sorted({c for c in text if not _ON_CALENDAR.fullmatch(c)})
        raise _invalid("backup_schedule", f"{shown(value)} has characters a schedule may not "
                       f"hold: {' '.join(shown(c) for c in bad[:8])}", _SCHEDULE_HINT)
    if text.isalpha() and text not in _CALENDAR_WORDS and text.lower() not in _WEEKDAYS:
        close = difflib.get_close_matches(text.lower(), tuple(BACKUP_INTERVAL_HOURS), n=1)
        raise _invalid("backup_schedule", f"{shown(value)} is not a schedule systemd knows",
                       f"did you mean {close[0]!r}? (e.g. schedule: {close[0]})" if close
                       else _SCHEDULE_HINT)
    return text


def _backup_dir(value: str) -> str:
    path = value.rstrip("/") if len(value) > 1 else value
    problem = None
    if len(path) > MAX_BACKUP_DIR:
        problem = f"is {len(path)} characters long (at most {MAX_BACKUP_DIR})"
    elif not path.startswith("/"):
        problem = "is not an absolute path"
    elif not _BACKUP_DIR.fullmatch(path):
        problem = ("has characters other than letters, digits, '.', '_', '-' and '/' (the "
                   "path is written into a unit and a shell script)")
    elif "//" in path or any(part in (".", "..") for part in path.split("/")):
        problem = "is not a normal path (no '//', '.' or '..' parts)"
    elif path == "/":
        problem = "is the root directory"
    if problem is not None:
        raise _invalid("backup_dir", f"{shown(value)} {problem}",
                       "write an absolute path of its own, e.g. /var/lib/etcd-backup")
    for refused, why in _BACKUP_DIR_REFUSED.items():
        if path == refused or path.startswith(refused + "/"):
            where = "is" if path == refused else "is inside"
            raise _invalid("backup_dir", f"{shown(value)} {where} {refused}, {why}",
                           "keep backups in a directory of their own, e.g. "
                           "/var/lib/etcd-backup (another disk or a mount is better still)")
    return path


DnsLabel = Annotated[str, _label_check("name", 63)]
HostRef = Annotated[str, _label_check("host name", 63, "; it names an entry of spec.hosts")]
ClusterName = Annotated[str, _label_check("cluster name", MAX_CLUSTER_NAME,
                                          " (it prefixes generated machine names)")]
RegistryHost = Annotated[str, AfterValidator(_registry_host)]
AliasName = Annotated[str, AfterValidator(_alias_name)]
HttpURL = Annotated[str, AfterValidator(_http_url)]
Cidr = Annotated[IPv4Network, BeforeValidator(_cidr_text)]
Whole = Annotated[int, BeforeValidator(_not_bool)]
Port = Annotated[Whole, Field(ge=1, le=65535)]
SSHUser = Annotated[str, AfterValidator(_ssh_user)]
Domain = Annotated[str, AfterValidator(_cluster_domain)]
SAN = Annotated[str, AfterValidator(_extra_san)]
BackupSchedule = Annotated[str, AfterValidator(_backup_schedule)]
BackupDir = Annotated[str, AfterValidator(_backup_dir)]


class Model(BaseModel):
    """Base: camelCase keys in YAML, unknown keys refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Metadata(Model):
    """Cluster identity."""

    name: Annotated[ClusterName, Field(max_length=MAX_CLUSTER_NAME)] = Field(
        description="Cluster name: a DNS label of at most 20 characters; prefixes generated "
        "machine names, so keep it short."
    )


class SSH(Model):
    """How the controller reaches hosts over SSH."""

    user: SSHUser = Field(
        "root", description="Login user (a POSIX portable user name); must be root or have "
        "password-less sudo.")
    private_key_file: Path | None = Field(
        None,
        description="Private key for the login. Required for the static provider; the nspawn "
        "and vagrant providers make or find one themselves.",
    )
    port: Port = Field(22, description="SSH port.")


class HostSSH(Model):
    """Per-host SSH overrides."""

    user: SSHUser | None = Field(None, description="Login user (a POSIX portable user name).")
    private_key_file: Path | None = None
    port: Port | None = None


class Host(Model):
    """One machine. Required for the static provider; optional (generated) otherwise."""

    name: DnsLabel = Field(description="Host name; becomes the Kubernetes node name.")
    address: IPv4Address = Field(description="Address other hosts and the controller use.",
                                 examples=["192.168.56.11"])
    ssh: HostSSH | None = Field(None, description="Overrides of spec.ssh for this host.")


class HostAlias(Model):
    """A name the machines resolve through /etc/hosts (there is no DNS in the lab)."""

    hostname: AliasName = Field(description="A host name without port, e.g. hub.test.com.")
    address: IPv4Address = Field(description="An address inside the provider's subnet.",
                                 examples=["192.168.56.1"])


# Both providers that generate machines keep room for a growing control plane the same way.
CONTROL_PLANE_SLOTS_HELP = (
    "Addresses kept for control-plane nodes ahead of the others (generated machines are "
    "numbered: control plane, dedicated etcd, workers, from firstHostOffset). Set it to the "
    "most control-plane nodes the cluster will have, so that growing the control plane later "
    "moves no other machine. Default: controlPlane.count.")


class NspawnProvider(Model):
    """Local machines: systemd-nspawn containers on this Linux host."""

    type: Literal["nspawn"]
    bridge: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[a-zA-Z0-9_-]+$")] = Field(
        "provbr0",
        description="Host bridge the machines attach to (shared between clusters): a Linux "
        "interface name of letters, digits, '-' and '_', at most 15 characters.",
    )
    subnet: Cidr = Field(
        IPv4Network("192.168.56.0/24"),
        description="Machine network; the bridge takes the first address.",
    )
    first_host_offset: Annotated[Whole, Field(ge=2, le=250)] = Field(
        11, description="Generated machines get addresses from subnet start + this offset."
    )
    control_plane_slots: Annotated[Whole, Field(ge=1, le=99)] | None = Field(
        None, description=CONTROL_PLANE_SLOTS_HELP)
    suite: Literal["bookworm"] = Field("bookworm", description="Debian release of the image.")
    debian_mirror: HttpURL = Field(
        "http://deb.debian.org/debian",
        description="Debian mirror for the base image and, through the apt proxy, the nodes.",
    )
    apt_proxy: bool = Field(
        True, description="Run an apt proxy on the bridge address so nodes can install packages."
    )
    host_aliases: list[HostAlias] = Field(
        default_factory=list,
        description="Extra /etc/hosts entries on every machine, e.g. a private registry served "
        "on the bridge address (hub.test.com -> 192.168.56.1 in the lab).",
    )


class VagrantProvider(Model):
    """Virtual machines through Vagrant (libvirt or VirtualBox)."""

    type: Literal["vagrant"]
    box: str = Field(
        "provisioner/debian12",
        description="Vagrant box; the default is built locally by `provisioner vagrant box`.",
    )
    vagrant_provider: Literal["libvirt", "virtualbox"] = Field("libvirt")
    memory_mib: Annotated[Whole, Field(ge=1024)] = Field(2048, description="Memory per VM.")
    cpus: Annotated[Whole, Field(ge=1, le=64)] = Field(2, description="vCPUs per VM.")
    subnet: Cidr = Field(IPv4Network("192.168.56.0/24"), description="Private network.")
    first_host_offset: Annotated[Whole, Field(ge=2, le=250)] = 11
    control_plane_slots: Annotated[Whole, Field(ge=1, le=99)] | None = Field(
        None, description=CONTROL_PLANE_SLOTS_HELP)
    libvirt_driver: Literal["auto", "kvm", "qemu"] = Field(
        "auto", description="`qemu` (software emulation) where there is no usable /dev/kvm."
    )
    boot_timeout: Annotated[Whole, Field(ge=60)] = Field(
        900, description="Seconds Vagrant waits for a VM to boot (long under emulation)."
    )
    cpu_model: str = Field(
        "qemu64",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="libvirt CPU model under software emulation (`qemu` driver); with `kvm` the "
        "host CPU is passed through.",
    )
    management_subnet: Cidr = Field(
        IPv4Network("192.168.121.0/24"),
        description="libvirt management network (DHCP; Vagrant logs in over it). Must not "
        "overlap the private subnet.",
    )
    management_network_mode: Literal["nat", "none"] = Field(
        "nat",
        description="`nat` gives VMs outbound access through the host; `none` keeps the "
        "management network isolated (air-gapped hosts, labs).",
    )


class StaticProvider(Model):
    """Existing hosts (cloud VMs, bare metal) reached over SSH; list them in spec.hosts."""

    type: Literal["static"]
    cloud: Literal["none", "aws", "gcp", "azure", "openstack"] = Field(
        "none",
        description="Cloud the hosts run in; anything but `none` adds the "
        "cloud-controller-manager.",
    )


Provider = Annotated[
    NspawnProvider | VagrantProvider | StaticProvider, Field(discriminator="type")
]


class ControlPlane(Model):
    """Control-plane nodes: kube-apiserver, kube-controller-manager, kube-scheduler."""

    count: Annotated[Whole, Field(ge=0)] | None = Field(
        None, description="1, 3 or 5 (1 leader + standbys). Default 1, or len(hosts)."
    )
    hosts: list[HostRef] | None = Field(None, description="Names from spec.hosts.")


class Workers(Model):
    """Worker nodes: kubelet, kube-proxy and the runtime, no control plane."""

    count: Annotated[Whole, Field(ge=0)] | None = Field(
        None, description="Default 0, or len(hosts).")
    hosts: list[HostRef] | None = Field(None, description="Names from spec.hosts.")


class EtcdBackup(Model):
    """Scheduled snapshots on every etcd member (a systemd timer), checked by verify."""

    schedule: BackupSchedule = Field(
        "daily",
        description="When: `hourly`, `daily`, `weekly`, or a systemd OnCalendar expression "
        "(`man systemd.time`, e.g. '*-*-* 00/6:00:00'; letters, digits, spaces and "
        "* : . , / ~ + _ - only), which needs maxAgeHours. Each member starts within 5 "
        "minutes of it (RandomizedDelaySec) and catches up on a run missed while it was "
        "down (Persistent).",
    )
    keep: Annotated[Whole, Field(ge=1, le=1000)] = Field(
        7, description="Snapshots kept per member; older ones are removed after each backup.")
    max_size_mib: Annotated[Whole, Field(ge=1, le=1 << 20)] = Field(
        2048,
        description="Total size of a member's snapshots, in MiB: after each backup the "
        "oldest are removed until the rest fit (the newest one is always kept).",
    )
    directory: BackupDir = Field(
        "/var/lib/etcd-backup",
        description="Absolute path on each member (made 0700, snapshots 0600); not inside "
        "/var/lib/etcd (a restore replaces it) nor /etc. Kept by `provisioner reset`.",
    )
    max_age_hours: Annotated[Whole, Field(ge=1, le=24 * 366)] | None = Field(
        None,
        description="How old a member's newest snapshot may be before verify's "
        "etcd-backup-age fails. Default: 2 (hourly), 26 (daily), 194 (weekly); required "
        "with an OnCalendar expression.",
    )

    @property
    def interval_hours(self) -> int | None:
        """Hours between two runs of a keyword schedule; None for an OnCalendar expression."""
        return BACKUP_INTERVAL_HOURS.get(self.schedule)

    @property
    def max_age(self) -> int | None:
        """maxAgeHours, or the schedule's default (None: an expression without one, which
        the spec rules refuse)."""
        if self.max_age_hours is not None:
            return self.max_age_hours
        return BACKUP_MAX_AGE_HOURS.get(self.schedule)


class Etcd(Model):
    """Placement of the etcd cluster (TLS everywhere: peer, server and client) and its
    scheduled backups."""

    placement: Literal["controlPlane", "dedicated"] = Field(
        "controlPlane",
        description="`controlPlane`: one member per control-plane node (stacked, as kubeadm). "
        "`dedicated`: a separate etcd group.",
    )
    count: Annotated[Whole, Field(ge=0)] | None = Field(
        None, description="Members of a dedicated group: 1, 3 or 5."
    )
    hosts: list[HostRef] | None = Field(None, description="Names from spec.hosts (dedicated).")
    backup: EtcdBackup | None = Field(
        None,
        description="Scheduled snapshots on every member, e.g. {schedule: daily, keep: 7}; "
        "off when absent (`provisioner etcd backup` takes one on demand).",
    )


class ContainerRuntime(Model):
    """The container runtime on every node."""

    name: Literal["containerd"] = "containerd"
    oci_runtime: Literal["runc"] = Field(
        "runc", description="Low-level OCI runtime. Only runc, built from its Go source, is "
        "offered: crun is C, has no source the lab can build from, and is not proven here.")


class Network(Model):
    """Cluster networking."""

    cni: Literal["bridge", "flannel"] = Field(
        "bridge",
        description="`bridge`: CNI bridge plugin with per-node pod subnets and host routes "
        "(no overlay, no image needed); `flannel`: VXLAN overlay from its DaemonSet. Both are "
        "proven in the lab with real pods; calico and cilium cannot be built or proven here "
        "and are not offered.",
    )
    pod_cidr: Cidr = Field(IPv4Network("10.244.0.0/16"), alias="podCIDR")
    service_cidr: Cidr = Field(IPv4Network("10.96.0.0/12"), alias="serviceCIDR")
    node_cidr_mask_size: Annotated[Whole, Field(ge=16, le=28)] = Field(
        24, alias="nodeCIDRMaskSize", description="Prefix length of each node's pod subnet."
    )
    cluster_domain: Domain = Field(
        "cluster.local",
        description="DNS domain of the cluster: lowercase labels separated by dots, "
        "e.g. cluster.local.",
    )
    kube_proxy_mode: Literal["iptables", "ipvs"] = Field(
        "iptables", description="`ipvs` needs IPVS in the host kernels (not on nspawn here)."
    )


class NodeLocalDNS(Model):
    """A DNS cache on every node (link-local address)."""

    enabled: bool = False
    address: IPv4Address = Field(IPv4Address("169.254.20.10"))


class DNS(Model):
    """Cluster DNS."""

    provider: Literal["coredns"] = "coredns"
    replicas: Annotated[Whole, Field(ge=1, le=10)] = 2
    upstream_servers: list[IPv4Address] = Field(
        default_factory=list, description="Forwarders; empty = the nodes' /etc/resolv.conf.",
        examples=["1.1.1.1"],
    )
    node_local_dns: NodeLocalDNS = Field(default_factory=NodeLocalDNS, alias="nodeLocalDNS")


class Addon(Model):
    """An optional addon."""

    enabled: bool


class Addons(Model):
    """Optional addons (the CNI and DNS are configured above)."""

    metrics_server: Addon = Field(default_factory=lambda: Addon(enabled=True))
    dashboard: Addon = Field(default_factory=lambda: Addon(enabled=False))
    logging: Addon = Field(
        default_factory=lambda: Addon(enabled=False),
        description="Cluster logging: a fluent-bit DaemonSet.",
    )


class RegistryMirror(Model):
    """Pull ``registry`` through ``endpoints`` (tried in order, then the registry itself)."""

    registry: RegistryHost = Field(description="e.g. docker.io, registry.k8s.io")
    endpoints: Annotated[list[HttpURL], Field(min_length=1)] = Field(
        description="Mirror URLs, e.g. https://hub.test.com.", examples=["https://hub.test.com"])


class PrivateRegistry(Model):
    """A private registry such as ``hub.test.com``; secrets are referenced, never inlined."""

    host: RegistryHost
    ca_file: Path | None = Field(None, description="CA bundle (PEM) the registry is signed by.")
    username: str | None = None
    password_file: Path | None = Field(None, description="File holding the password.")
    insecure_skip_verify: bool = False


class Registries(Model):
    """Image registries and mirrors, written into containerd's configuration."""

    mirrors: list[RegistryMirror] = Field(default_factory=list)
    private: list[PrivateRegistry] = Field(default_factory=list)
    pause_image_registry: RegistryHost = Field(
        "registry.k8s.io", description="Where the sandbox (pause) image is pulled from."
    )


class LoadBalancer(Model):
    """How clients reach the apiservers."""

    mode: Literal["localHaproxy", "vip", "external"] = Field(
        "localHaproxy",
        description="`localHaproxy`: haproxy on every node at 127.0.0.1:port forwarding to all "
        "apiservers. `vip`: keepalived VIP + haproxy on the control-plane nodes. `external`: "
        "a load balancer you run at `address`.",
    )
    port: Port = Field(8443, description="Load balancer port; it must differ from "
                       "spec.apiserver.securePort (where each apiserver listens, 6443 by "
                       "default) unless the mode is `external`.")
    vip: IPv4Address | None = Field(None, description="Virtual IP for mode `vip`.",
                                    examples=["192.168.56.100"])
    virtual_router_id: Annotated[Whole, Field(ge=1, le=255)] = Field(
        51,
        description="VRRP router id of the VIP in mode `vip`: unique among the VRRP routers "
        "on the control-plane network (another cluster's keepalived included).",
    )
    address: str | None = Field(None, description="Host name or IP for mode `external`.")


class Artifacts(Model):
    """Where binaries come from: downloaded once to the controller, verified, copied."""

    source: Literal["online", "mirror", "local"] = Field(
        "online",
        description="`online`: official release URLs; `mirror`: the same layout over HTTP "
        "at `mirrorURL`; `local`: a directory or bundle tarball at `path`.",
    )
    mirror_url: HttpURL | None = Field(None, alias="mirrorURL",
                                       examples=["https://mirror.example.com/k8s"])
    path: Path | None = None


class APIServer(Model):
    """kube-apiserver settings."""

    secure_port: Port = Field(6443, description="Port each apiserver listens on.")
    extra_sans: list[SAN] = Field(
        default_factory=list, alias="extraSANs", description="More names/IPs for its cert."
    )
    encryption_at_rest: bool = Field(True, description="Encrypt Secrets in etcd (aescbc).")
    audit_log: bool = Field(True, description="Write an audit log on each control-plane node.")


class ClusterSpec(Model):
    """Everything about the cluster."""

    kubernetes_version: str | None = Field(
        None, description="A supported version (see `provisioner versions`); default newest."
    )
    provider: Provider
    ssh: SSH = Field(default_factory=SSH)
    hosts: list[Host] = Field(default_factory=list)
    control_plane: ControlPlane = Field(default_factory=ControlPlane)
    workers: Workers = Field(default_factory=Workers)
    etcd: Etcd = Field(default_factory=Etcd)
    container_runtime: ContainerRuntime = Field(default_factory=ContainerRuntime)
    network: Network = Field(default_factory=Network)
    dns: DNS = Field(default_factory=DNS)
    addons: Addons = Field(default_factory=Addons)
    registries: Registries = Field(default_factory=Registries)
    load_balancer: LoadBalancer = Field(default_factory=LoadBalancer)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    apiserver: APIServer = Field(default_factory=APIServer)


class Cluster(Model):
    """The top-level document."""

    api_version: Literal["provisioner.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterSpec
