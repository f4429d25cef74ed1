"""Flag data files (per component and version) and the flags module that reads them."""

from __future__ import annotations

from importlib import resources

import pytest

from provisioner.versions.flags import (
    COMPONENTS,
    UnknownFlagData,
    available,
    deprecated_flags,
    known_flags,
    parse_flags,
    unknown_flags,
)

MINORS = ("1.35", "1.36", "1.37")
K8S_COMPONENTS = tuple(c for c in COMPONENTS if c != "etcd")
ETCD_MINORS = ("3.6", "3.7")

#: A plausible lower bound on the number of flags per component.
MINIMUM = {
    "kube-apiserver": 150,
    "kube-controller-manager": 120,
    "kube-scheduler": 50,
    "kubelet": 100,
    "kube-proxy": 50,
    "etcd": 70,
}

#: Flags that every supported version must have (our units and kubeadm-style setups use them).
WELL_KNOWN = {
    "kube-apiserver": {
        "etcd-servers",
        "etcd-cafile",
        "etcd-certfile",
        "etcd-keyfile",
        "service-account-issuer",
        "service-account-key-file",
        "service-account-signing-key-file",
        "tls-cert-file",
        "tls-private-key-file",
        "client-ca-file",
        "authorization-mode",
        "encryption-provider-config",
        "audit-log-path",
        "audit-policy-file",
        "anonymous-auth",
        "secure-port",
        "advertise-address",
        "service-cluster-ip-range",
        "enable-admission-plugins",
        "kubelet-client-certificate",
        "requestheader-client-ca-file",
        "proxy-client-cert-file",
        "feature-gates",
        "v",
    },
    "kube-controller-manager": {
        "cluster-signing-cert-file",
        "cluster-signing-key-file",
        "leader-elect",
        "service-account-private-key-file",
        "root-ca-file",
        "kubeconfig",
        "authentication-kubeconfig",
        "authorization-kubeconfig",
        "use-service-account-credentials",
        "cluster-cidr",
        "allocate-node-cidrs",
        "controllers",
        "bind-address",
    },
    "kube-scheduler": {
        "leader-elect",
        "authentication-kubeconfig",
        "authorization-kubeconfig",
        "config",
        "kubeconfig",
        "bind-address",
        "secure-port",
    },
    "kubelet": {
        "config",
        "kubeconfig",
        "bootstrap-kubeconfig",
        "container-runtime-endpoint",
        "node-ip",
        "hostname-override",
        "cert-dir",
        "node-labels",
        "root-dir",
        "v",
    },
    "kube-proxy": {"config", "hostname-override", "kubeconfig", "proxy-mode", "cluster-cidr"},
}

ETCD_WELL_KNOWN = {
    "name",
    "data-dir",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "initial-advertise-peer-urls",
    "advertise-client-urls",
    "listen-client-urls",
    "listen-peer-urls",
    "listen-metrics-urls",
}

#: Flags removed before the given minor (so they must be absent from that minor on).
REMOVED = {
    "kube-apiserver": {
        "insecure-port": "1.24",
        "insecure-bind-address": "1.24",
        "port": "1.24",
        "kubelet-https": "1.22",
        "service-account-api-audiences": "1.25",
        "azure-container-registry-config": "1.30",
        "cloud-provider": "1.33",
        "cloud-config": "1.33",
    },
    "kubelet": {
        "container-runtime": "1.27",
        "network-plugin": "1.24",
        "network-plugin-mtu": "1.24",
        "cni-bin-dir": "1.24",
        "docker-endpoint": "1.24",
        "dynamic-config-dir": "1.26",
        "keep-terminated-pod-volumes": "1.31",
        "azure-container-registry-config": "1.30",
    },
    "kube-controller-manager": {
        "pod-eviction-timeout": "1.27",
        "address": "1.24",
        "port": "1.24",
    },
    "kube-scheduler": {
        "address": "1.24",
        "port": "1.24",
        "policy-config-file": "1.23",
    },
    "kube-proxy": {"udp-timeout": "1.26", "resource-container": "1.17"},
}


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _data_text(rel: str) -> str:
    return resources.files("provisioner.versions").joinpath("flags", rel).read_text()


# ---------------------------------------------------------------- data files


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("component", K8S_COMPONENTS)
def test_data_file_exists_with_header_and_sorted_unique_names(component: str, minor: str) -> None:
    text = _data_text(f"v{minor}/{component}.txt")
    lines = text.splitlines()
    assert lines[0].startswith("# source:"), lines[0]
    assert any(ln.startswith("# version:") and f"v{minor}" in ln for ln in lines[:20])
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    assert names == sorted(set(names)), "flag names must be sorted and unique"
    for name in names:
        assert not name.startswith("-"), name
        assert " " not in name and "#" not in name, name


@pytest.mark.parametrize("etcd_minor", ETCD_MINORS)
def test_etcd_data_file_exists(etcd_minor: str) -> None:
    lines = _data_text(f"etcd/{etcd_minor}.txt").splitlines()
    assert lines[0].startswith("# source:")
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    assert names == sorted(set(names))


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("component", K8S_COMPONENTS)
def test_plausible_size_and_well_known_flags(component: str, minor: str) -> None:
    flags = known_flags(component, minor)
    assert len(flags) > MINIMUM[component], len(flags)
    missing = WELL_KNOWN[component] - flags
    assert not missing, sorted(missing)


@pytest.mark.parametrize("etcd_minor", ETCD_MINORS)
def test_etcd_plausible_size_and_well_known_flags(etcd_minor: str) -> None:
    flags = known_flags("etcd", etcd_minor)
    assert len(flags) > MINIMUM["etcd"]
    assert not ETCD_WELL_KNOWN - flags, sorted(ETCD_WELL_KNOWN - flags)


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("component", sorted(REMOVED))
def test_removed_flags_are_absent(component: str, minor: str) -> None:
    flags = known_flags(component, minor)
    for name, removed_in in REMOVED[component].items():
        if _key(minor) >= _key(removed_in):
            assert name not in flags, f"{component} {minor} still lists --{name}"


def test_data_comes_from_the_binaries_help() -> None:
    """Every file was written by scripts/gen-flags.py from a built binary's --help."""
    for minor in MINORS:
        for component in K8S_COMPONENTS:
            head = _data_text(f"v{minor}/{component}.txt").splitlines()[:2]
            assert f"`{component} --help`" in head[0] and "gen-flags.py" in head[0], head
            assert head[1].startswith(f"# version: Kubernetes v{minor}."), head
    for etcd_minor in ETCD_MINORS:
        head = _data_text(f"etcd/{etcd_minor}.txt").splitlines()[:2]
        assert "`etcd --help`" in head[0] and f"etcd Version: {etcd_minor}." in head[1], head


def test_version_specific_differences() -> None:
    """The data tells the minors apart where the real binaries differ."""
    assert known_flags("kube-apiserver", "1.35") != known_flags("kube-apiserver", "1.37")
    assert "enable-v2" not in known_flags("etcd", "3.6")
    assert "v2-deprecation" in known_flags("etcd", "3.7")


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("component", [*K8S_COMPONENTS, "etcd"])
def test_deprecated_flags_are_known_flags(component: str, minor: str) -> None:
    version = {"1.35": "3.6", "1.36": "3.6", "1.37": "3.7"}[minor] if component == "etcd" \
        else minor
    # --help hides pflag-deprecated flags: the generated data lists none of them.
    assert deprecated_flags(component, version) <= known_flags(component, version)
    assert deprecated_flags("kubelet", "1.20") == frozenset()


def test_available_lists_every_delivered_version() -> None:
    avail = available()
    for component in K8S_COMPONENTS:
        assert set(MINORS) <= set(avail[component])
    assert set(ETCD_MINORS) <= set(avail["etcd"])


# ---------------------------------------------------------------- missing data


def test_unknown_version_raises_with_available_versions() -> None:
    with pytest.raises(UnknownFlagData) as err:
        known_flags("kubelet", "1.20")
    msg = str(err.value)
    assert "kubelet" in msg and "1.20" in msg and "1.35" in msg


def test_unknown_component_raises() -> None:
    with pytest.raises(UnknownFlagData, match="kube-foo"):
        known_flags("kube-foo", "1.35")
    with pytest.raises(ValueError):
        known_flags("../flags", "1.31")


def test_bad_version_string_raises() -> None:
    with pytest.raises(UnknownFlagData, match="etcd"):
        known_flags("etcd", "../../x")


def test_minor_with_leading_v_is_accepted() -> None:
    assert known_flags("kubelet", "v1.37") == known_flags("kubelet", "1.37")


# ---------------------------------------------------------------- parse_flags


def test_parse_flags_values_and_booleans() -> None:
    argv = [
        "--etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379",
        "--allow-privileged",
        "--feature-gates=A=true,B=false",
        "--v=2",
        "--token-auth-file=",
    ]
    assert parse_flags(argv) == {
        "etcd-servers": "https://10.0.0.1:2379,https://10.0.0.2:2379",
        "allow-privileged": None,
        "feature-gates": "A=true,B=false",
        "v": "2",
        "token-auth-file": "",
    }


def test_parse_flags_last_value_wins() -> None:
    assert parse_flags(["--v=1", "--v=4"]) == {"v": "4"}


def test_parse_flags_accepts_underscore_names() -> None:
    assert parse_flags(["--log_dir=/var/log"]) == {"log_dir": "/var/log"}


def test_parse_flags_empty() -> None:
    assert parse_flags([]) == {}


@pytest.mark.parametrize(
    "token", ["value", "-v=2", "-h", "--", "--=x", "--=", "--bad name", "---x", ""]
)
def test_parse_flags_rejects_non_flags(token: str) -> None:
    with pytest.raises(ValueError):
        parse_flags(["--v=2", token])


def test_parse_flags_rejects_space_separated_value() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.1"):
        parse_flags(["--advertise-address", "10.0.0.1"])


# ---------------------------------------------------------------- unknown_flags


def test_unknown_flags_reports_only_unknown_in_argv_order() -> None:
    argv = [
        "--insecure-port=0",
        "--etcd-servers=https://127.0.0.1:2379",
        "--made-up-flag",
        "--anonymous-auth=false",
        "--insecure-port=8080",
    ]
    assert unknown_flags("kube-apiserver", "1.37", argv) == ["insecure-port", "made-up-flag"]


def test_unknown_flags_empty_for_valid_kubelet_args() -> None:
    argv = [
        "--config=/var/lib/kubelet/config.yaml",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--node-ip=10.0.0.5",
        "--hostname-override=node-1",
        "--v=2",
    ]
    for minor in MINORS:
        assert unknown_flags("kubelet", minor, argv) == []
    assert unknown_flags("kubelet", "1.37", [*argv, "--network-plugin=cni"]) == ["network-plugin"]


def test_unknown_flags_etcd() -> None:
    argv = ["--name=cp-1", "--snapshot-count=10000", "--enable-v2=true"]
    assert unknown_flags("etcd", "3.7", argv) == ["enable-v2"]


def test_unknown_flags_propagates_errors() -> None:
    with pytest.raises(UnknownFlagData):
        unknown_flags("kube-proxy", "1.10", ["--v=2"])
    with pytest.raises(ValueError):
        unknown_flags("kube-proxy", "1.37", ["v=2"])
