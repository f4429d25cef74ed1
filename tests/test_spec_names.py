"""Host names, registry hosts, URLs, SANs and SSH users as the spec takes them; hints that fit
the field they are on."""

from __future__ import annotations

import pytest

from provisioner.spec import SpecError, parse
from provisioner.spec.names import (
    dns_name_problem,
    host_port_problem,
    san_problem,
    ssh_user_problem,
    url_problem,
)

HEAD = "apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n"


@pytest.mark.parametrize("name", ["a", "hub.test.com", "x-1.example.org", "a" * 63 + ".com",
                                  ".".join(["a" * 63] * 3) + "." + "b" * 61, "1a.example"])
def test_dns_names_accepted(name: str) -> None:
    assert dns_name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("", "is empty"),
    ("a" * 64 + ".com", "has a label of 64 characters"),
    (".".join(["a" * 63] * 4) + ".bb", "is 258 characters long; a DNS name has at most 253"),
    ("10.0.0.300", "looks like an IP address but is not a valid one"),
    ("1.2.3", "looks like an IP address but is not a valid one"),
    ("999.1.1.1", "looks like an IP address but is not a valid one"),
    ("010.0.0.1", "looks like an IP address but is not a valid one"),
    # A valid address is one, just not a name: the fix is a DNS name, not a better address.
    ("1.2.3.4", "is an IP address, not a DNS name"),
    ("fd00::1", "is an IP address, not a DNS name"),
    ("[fd00::1]", "is an IP address, not a DNS name"),
    ("123", "is all digits, which a host name cannot be"),
    ("host.123", "ends in an all-numeric label"),
    ("a..b", "has an empty label"),
    ("a.b.", "has an empty label"),
    ("-a.com", "has a label that starts or ends with '-'"),
    ("Hub.test.com", "has uppercase letters"),
    ("hub_test.com", "has '_', which host names cannot contain"),
    ("hub test", "contains a space"),
    ("'hub'", "contains a quote"),
    ("hub\x07", "contains the control character"),
])
def test_dns_names_refused(name: str, problem: str) -> None:
    assert (dns_name_problem(name) or "").startswith(problem), dns_name_problem(name)


def test_wildcards_only_where_allowed() -> None:
    assert dns_name_problem("*.example.com") is not None
    assert dns_name_problem("*.example.com", wildcard=True) is None
    assert san_problem("*.example.com") is None


@pytest.mark.parametrize(("value", "problem"), [
    ("hub.test.com", None), ("localhost:5000", None), ("10.0.0.5:5000", None),
    ("registry", "is a single word"), ("[fd00::1]:5000", "is an IPv6 address"),
    ("fd00::1", "is an IPv6 address"), ("hub.test.com:0", "has the port '0'"),
    ("hub.test.com:", "has the port ''"), ("hub.test.com:" + "9" * 50, "has the port"),
    ("https://hub.test.com", "has a scheme"), ("hub.test.com/v2", "has a path"),
    ("hub .test.com", "contains a space"), ('"hub.test.com"', "contains a quote"),
])
def test_registry_hosts(value: str, problem: str | None) -> None:
    found = host_port_problem(value)
    assert found == problem if problem is None else (found or "").startswith(problem), found


@pytest.mark.parametrize(("value", "problem"), [
    ("https://hub.test.com", None), ("http://10.0.0.1:8080/a/b_c~d%20", None),
    ("https://Mirror.Example.com/k8s/", None),
    ("hub.test.com", "has no scheme"), ("ftp://x.com", "has the scheme 'ftp'"),
    ('https://hub.test.com/"x', "contains a quote"), ("https://hub.test.com/a\\b",
                                                      "has a character its path cannot carry"),
    ("https://", "has no host"), ("https://u:p@x.com", "has credentials"),
    ("https://[fd00::1]:5000", "has an IPv6 address"), ("https://x.com:70000", "has the port"),
    ("https://x..com", "has a host that has an empty label"),
])
def test_urls(value: str, problem: str | None) -> None:
    found = url_problem(value)
    assert found == problem if problem is None else (found or "").startswith(problem), found


@pytest.mark.parametrize(("value", "problem"), [
    ("10.0.0.1", None), ("fd00::1", None), ("api.example.com", None),
    ("[fd00::1]", "is an IPv6 address in brackets"), ("api.example.com:6443", "has a port"),
    ("https://api", "is a URL"),
])
def test_sans(value: str, problem: str | None) -> None:
    found = san_problem(value)
    assert found == problem if problem is None else (found or "").startswith(problem), found


def _issues(body: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(HEAD + body)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize("user", ["root", "debian", "_svc", "a-b_c", "a.b_c-d", "Root",
                                  "Admin.User", "1abc", "svc-", "a" * 32])
def test_posix_portable_ssh_users_accepted(user: str) -> None:
    cluster = parse(HEAD + f"  provider: {{type: nspawn}}\n  ssh: {{user: '{user}'}}\n")
    assert cluster.spec.ssh.user == user


@pytest.mark.parametrize(("user", "problem"), [
    ("-oProxyCommand=touch /tmp/x", "contains a space"),
    ("-oProxyCommand=sh", "starts with '-' (ssh would read it as an option)"),
    ("-l", "starts with '-'"),
    ("a b", "contains a space"),
    ("root\n", "has spaces around it"),
    ("a" * 33, "is 33 characters long; a user name has at most 32"),
    ("", "is empty"),
    ("machine$", "has '$', which a portable user name cannot contain"),
    ("a$b", "has '$'"),
    ("root@evil", "has '@'"),
    ("root:0", "has ':'"),
    ("../etc", "has '/'"),
    ("é", "has 'é'"),
    ("1000", "is all digits, which reads as a user id"),
    ("..", "is a path component"),
])
def test_ssh_users_refused(user: str, problem: str) -> None:
    assert (ssh_user_problem(user) or "").startswith(problem), ssh_user_problem(user)
    text = user.replace("\n", "\\n")
    for body in (f'  provider: {{type: nspawn}}\n  ssh: {{user: "{text}"}}\n',
                 '  provider: {type: static}\n  ssh: {privateKeyFile: /k}\n  hosts:\n'
                 f'    - {{name: n, address: 10.0.0.1, ssh: {{user: "{text}"}}}}\n'):
        issues = _issues(body)
        assert len(issues) == 1
        assert f"is not a valid user name: it {problem}" in issues[0], issues[0]
        # The hint states the rule the check applies.
        assert issues[0].endswith(
            "(fix: use at most 32 letters, digits, '.', '_' and '-', not starting with '-' "
            "and not all digits (a POSIX portable user name, e.g. root or debian))"), issues[0]
        assert issues[0].startswith(("spec.ssh.user:", "spec.hosts[0].ssh.user:"))


# Hints fit the field they are on: each example is the field's own.
@pytest.mark.parametrize(("body", "path", "example"), [
    ("  provider: {type: nspawn, subnet: 192.168.56.x/24}\n", "spec.provider.subnet",
     "e.g. 192.168.56.0/24"),
    ("  provider: {type: vagrant, managementSubnet: x/24}\n", "spec.provider.managementSubnet",
     "e.g. 192.168.121.0/24"),
    ("  provider: {type: nspawn}\n  network: {serviceCIDR: 10.96.0.0/40}\n",
     "spec.network.serviceCIDR", "e.g. 10.96.0.0/12"),
    ("  provider: {type: nspawn}\n  network: {podCIDR: x/16}\n", "spec.network.podCIDR",
     "e.g. 10.244.0.0/16"),
    ("  provider: {type: nspawn}\n  network: {podCIDR: 10.1.0.0}\n", "spec.network.podCIDR",
     "write the prefix length too, e.g. 10.244.0.0/16"),
    ("  provider: {type: nspawn}\n  loadBalancer: {mode: vip, vip: 1.2.3}\n",
     "spec.loadBalancer.vip", "e.g. 192.168.56.100"),
    ("  provider: {type: nspawn}\n  dns: {upstreamServers: [x]}\n",
     "spec.dns.upstreamServers[0]", "e.g. 1.1.1.1"),
    ("  provider: {type: nspawn, debianMirror: deb.debian.org}\n", "spec.provider.debianMirror",
     "e.g. http://deb.debian.org/debian"),
    ("  provider: {type: nspawn}\n  artifacts: {source: mirror, mirrorURL: x}\n",
     "spec.artifacts.mirrorURL", "e.g. https://mirror.example.com/k8s"),
    ("  provider: {type: nspawn}\n  registries:\n    mirrors: [{registry: docker.io, "
     "endpoints: [x]}]\n", "spec.registries.mirrors[0].endpoints[0]", "e.g. https://hub.test.com"),
    ("  provider: {type: nspawn, hostAliases: [{hostname: hub.test.com, address: x}]}\n",
     "spec.provider.hostAliases[0].address", "e.g. 192.168.56.1"),
    ("  provider: {type: static}\n  hosts: [{name: a, address: x}]\n",
     "spec.hosts[0].address", "e.g. 192.168.56.11"),
    ("  provider: {type: nspawn}\n  dns: {nodeLocalDNS: {address: x}}\n",
     "spec.dns.nodeLocalDNS.address", "e.g. 169.254.20.10"),
])
def test_hint_examples_are_the_fields_own(body: str, path: str, example: str) -> None:
    issue = next(i for i in _issues(body) if i.startswith(path + ":"))
    assert f"(fix: {example}" in issue or example in issue.split("(fix:")[1], issue


def test_length_hints_name_the_fields_own_limit() -> None:
    with pytest.raises(SpecError) as info:
        parse(HEAD.replace("{name: t}", "{name: Bad_Name}") + "  provider: {type: nspawn}\n")
    assert "at most 20 characters" in info.value.issues[0].hint
    issues = _issues("  provider: {type: static}\n  ssh: {privateKeyFile: /k}\n"
                     "  hosts: [{name: Bad_Name, address: 10.0.0.1}]\n")
    assert "at most 63 characters" in issues[0]
    issues = _issues("  provider: {type: nspawn}\n  controlPlane: {hosts: [Bad]}\n")
    assert "it names an entry of spec.hosts" in issues[0]
