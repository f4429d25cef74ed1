"""Port clashes with the spec's configurable ports: the load balancer's port, the
apiserver's securePort and the SSH ports against each other and against the fixed ports of
etcd, kubelet, kube-proxy and the controllers, on the hosts that really run them.

Every clash names the field that can move, and the port a hint suggests is free.
"""

from __future__ import annotations

import re

import pytest

from provisioner.components import ALL
from provisioner.spec import SpecError, parse

HEAD = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 3}
  workers: {count: 1}
"""
STATIC = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  provider: {type: static}
  ssh: {privateKeyFile: /keys/id}
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: w1, address: 10.0.0.2, ssh: {port: PORT}}
"""
FIXED = {p for c in ALL for p in c.ports if c.name != "kube-apiserver"}


def _issues(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(text)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(("extra", "field", "other"), [
    ("apiserver: {securePort: 2379}", "spec.apiserver.securePort", "etcd"),
    ("apiserver: {securePort: 2380}", "spec.apiserver.securePort", "etcd"),
    ("apiserver: {securePort: 2381}", "spec.apiserver.securePort", "etcd"),
    ("apiserver: {securePort: 10250}", "spec.apiserver.securePort", "kubelet"),
    ("apiserver: {securePort: 10248}", "spec.apiserver.securePort", "kubelet"),
    ("apiserver: {securePort: 10257}", "spec.apiserver.securePort", "kube-controller-manager"),
    ("apiserver: {securePort: 10259}", "spec.apiserver.securePort", "kube-scheduler"),
    ("apiserver: {securePort: 10256}", "spec.apiserver.securePort", "kube-proxy"),
    ("loadBalancer: {port: 10250}", "spec.loadBalancer.port", "kubelet"),
    ("loadBalancer: {port: 2379}", "spec.loadBalancer.port", "etcd"),
    ("loadBalancer: {port: 10256}", "spec.loadBalancer.port", "kube-proxy"),
    ("loadBalancer: {mode: vip, vip: 192.168.56.100, port: 2380}", "spec.loadBalancer.port",
     "etcd"),
    ("ssh: {port: 10250}", "spec.ssh.port", "kubelet"),
    ("ssh: {port: 8443}", "spec.ssh.port", "haproxy"),
    ("apiserver: {securePort: 7443}\n  ssh: {port: 7443}", "spec.apiserver.securePort", "sshd"),
])
def test_a_configured_port_on_a_fixed_one_names_the_field(extra: str, field: str,
                                                          other: str) -> None:
    text = HEAD + "  " + extra + "\n"
    issues = [i for i in _issues(text) if i.startswith(field + ":")]
    assert issues, _issues(text)
    assert f"is also the port of {other}" in issues[0] or other in issues[0]


@pytest.mark.parametrize("extra", [
    "  loadBalancer: {port: 7000}\n  apiserver: {securePort: 7000}\n",
    "  apiserver: {securePort: 8443}\n",  # the load balancer's default port
    "  loadBalancer: {port: 6443}\n",  # the apiserver's default port
    "  loadBalancer: {mode: vip, vip: 192.168.56.100, port: 6443}\n",
])
def test_load_balancer_and_apiserver_on_one_port(extra: str) -> None:
    issues = _issues(HEAD + extra)
    assert len(issues) == 1, issues
    assert issues[0].startswith("spec.loadBalancer.port: port ")
    assert "is also spec.apiserver.securePort" in issues[0]


@pytest.mark.parametrize("extra", [
    # An external load balancer runs elsewhere: it may use the apiserver's port.
    "  loadBalancer: {mode: external, address: 10.0.0.5, port: 6443}\n",
    # Ports moved apart free each other's defaults.
    "  apiserver: {securePort: 9443}\n  loadBalancer: {port: 6443}\n",
    "  apiserver: {securePort: 8443}\n  loadBalancer: {port: 6443}\n",
    # haproxy runs on kubelet nodes only: dedicated etcd hosts are none.
    "  etcd: {placement: dedicated, count: 3}\n  loadBalancer: {port: 2379}\n",
    # The same for SSH on an etcd-only host... and an apiserver port only control planes use.
    "  etcd: {placement: dedicated, count: 3}\n  ssh: {port: 2222}\n",
])
def test_ports_that_do_not_meet_are_accepted(extra: str) -> None:
    assert parse(HEAD + extra).metadata.name == "t"


def test_a_hosts_own_ssh_port_is_checked_on_that_host() -> None:
    # w1 is a worker: haproxy (localHaproxy) runs there, the apiserver does not.
    issues = _issues(STATIC.replace("PORT", "8443"))
    assert issues == ["spec.hosts[1].ssh.port: port 8443 (sshd) is also the port of haproxy "
                      "on host w1 (fix: run sshd on another port (22 is usual) and set it "
                      "here)",
                      "spec.loadBalancer.port: port 8443 (haproxy) is also the port of sshd "
                      "on host w1 (fix: use another port for the load balancer, e.g. 9443)"]
    assert parse(STATIC.replace("PORT", "6443")).metadata.name == "t"


@pytest.mark.parametrize("extra", [
    "  apiserver: {securePort: 8443}\n",
    "  apiserver: {securePort: 6443}\n  loadBalancer: {port: 6443}\n",
    "  apiserver: {securePort: 9443}\n  loadBalancer: {port: 9443}\n  ssh: {port: 8443}\n",
    "  apiserver: {securePort: 2379}\n",
    "  apiserver: {securePort: 2379}\n  loadBalancer: {port: 6443}\n",
    "  loadBalancer: {port: 10250}\n  apiserver: {securePort: 8443}\n",
    "  ssh: {port: 6443}\n",
])
def test_a_suggested_port_is_free(extra: str) -> None:
    text = HEAD + extra
    configured = {int(p) for p in re.findall(r"(?:securePort|port): (\d+)", extra)}
    for issue in _issues(text):
        for suggested in re.findall(r"e\.g\. (\d+)", issue):
            port = int(suggested)
            assert port not in FIXED and port not in configured, issue
            if "loadBalancer" not in extra:
                assert port != 8443, issue  # the load balancer's default
            if "securePort" not in extra:
                assert port != 6443, issue  # the apiserver's default


@pytest.mark.parametrize("extra, field", [
    ("  loadBalancer: {port: yes}\n", "spec.loadBalancer.port"),
    ("  apiserver: {securePort: true}\n", "spec.apiserver.securePort"),
    ("  ssh: {port: on}\n", "spec.ssh.port"),
    ("  dns: {replicas: true}\n", "spec.dns.replicas"),
])
def test_a_boolean_is_not_a_number(extra: str, field: str) -> None:
    """pydantic reads true as 1: `port: yes` would have meant port 1."""
    issues = _issues(HEAD.replace("  workers: {count: 1}\n", "  workers: {count: false}\n")
                     + extra)
    assert any(i.startswith("spec.workers.count: expected a whole number, got false (fix: "
                            "write the number") for i in issues), issues
    assert any(i.startswith(f"{field}: expected a whole number, got true") for i in issues), (
        issues)
