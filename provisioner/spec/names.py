"""Host names, registry hosts, URLs and SSH users as the spec takes them: what is wrong with
one, in words.

Scope: the checks behind every field that names a host (registries, mirror endpoints, host
aliases, extra SANs, the external load balancer, the cluster domain) or an SSH login user.
Each function returns the problem as text (``None`` when the value is fine), so a field
validator or a rule can put it in its message and add the fix that fits its field. The
cluster is IPv4: IPv6 literals are recognised and refused with that reason, except as
certificate SANs, which may name them.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address

from provisioner.spec.errors import shown

MAX_NAME = 253  # RFC 1035: a DNS name of at most 253 characters (255 octets on the wire)
MAX_LABEL = 63
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_CHAR = re.compile(r"[-a-z0-9]")
# What may follow the host of a URL: the path. No quotes, backslashes, spaces or controls:
# endpoints are written into TOML strings and sources.list lines as they are.
_URL_PATH = re.compile(r"(/[A-Za-z0-9._~!$&()*+,;=:@%/-]*)?")
_QUOTES = "\"'`"
# POSIX portable user names (POSIX.1, "User Name"): characters of the portable filename
# set, not starting with '-'. shadow's useradd takes the same, and a trailing '$' for Samba
# machine accounts, which is not portable, so not here. With no '-' first, space, '@', ':'
# or '/', the name reaches ssh and Ansible as `USER@HOST` and never as an option.
_USER_CHAR = re.compile(r"[A-Za-z0-9._-]")
MAX_USER = 32  # utmp's ut_user field: the traditional Linux limit


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address literal."""
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipv6(text: str) -> bool:
    try:
        IPv6Address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def text_problem(value: str) -> str | None:
    """Spaces, quotes or control characters, which no host, URL or user name carries."""
    if value != value.strip():
        return "has spaces around it"
    for ch in value:
        if ch in _QUOTES:
            return f"contains a quote ({ch}): YAML quotes go around the whole value"
        if ch.isspace():
            return "contains a space"
        if not ch.isprintable():
            return f"contains the control character {ch!r}"
    return None


def dns_name_problem(name: str, *, wildcard: bool = False) -> str | None:
    """What is wrong with ``name`` as a DNS host name (RFC 1123), or None.

    Labels are lowercase letters, digits and '-' (not first or last), at most 63 characters;
    the name at most 253. A name whose last label is all digits is refused: ``10.0.0.300`` is
    a mistyped address, not a host name. ``wildcard`` allows one leading ``*.``.
    """
    problem = text_problem(name)
    if problem is not None:
        return problem
    if not name:
        return "is empty"
    if wildcard and name.startswith("*."):
        name = name[2:]
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; a DNS name has at most {MAX_NAME}"
    labels = name.split(".")
    if is_ip(name.removeprefix("[").removesuffix("]")):
        return "is an IP address, not a DNS name"
    if len(labels) > 1 and all(label.isdigit() for label in labels if label):
        return "looks like an IP address but is not a valid one"
    for label in labels:
        if not label:
            return "has an empty label (a leading, trailing or double dot)"
        if len(label) > MAX_LABEL:
            return (f"has a label of {len(label)} characters ({shown(label, 24)}); a label "
                    f"has at most {MAX_LABEL}")
        if not _LABEL.fullmatch(label):
            bad = next((c for c in label if not _LABEL_CHAR.fullmatch(c)), "-")
            if bad != bad.lower():
                return "has uppercase letters (host names are written in lowercase)"
            if bad == "-":
                return f"has a label that starts or ends with '-' ({shown(label, 24)})"
            return f"has {bad!r}, which host names cannot contain"
    if labels[-1].isdigit():
        return ("is all digits, which a host name cannot be" if len(labels) == 1
                else "ends in an all-numeric label, which a host name cannot")
    return None


def ssh_user_problem(user: str) -> str | None:
    """What is wrong with ``user`` as an SSH login (a POSIX portable user name), or None.

    At most 32 of ``A-Z a-z 0-9 . _ -``, not starting with '-'; not all digits (chown and
    sudo would read a user id) and not ``.`` or ``..``, which useradd refuses too.
    """
    problem = text_problem(user)
    if problem is not None:
        return problem
    if not user:
        return "is empty"
    if len(user) > MAX_USER:
        return f"is {len(user)} characters long; a user name has at most {MAX_USER}"
    if user.startswith("-"):
        return "starts with '-' (ssh would read it as an option)"
    bad = next((c for c in user if not _USER_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"has {bad!r}, which a portable user name cannot contain"
    if user.isdigit():
        return "is all digits, which reads as a user id"
    if user in (".", ".."):
        return "is a path component ('.' or '..'), not a name"
    return None


def host_port_problem(value: str) -> str | None:
    """What is wrong with ``value`` as ``host[:port]`` of an image registry, or None.

    The host is a DNS name with a dot (a single word is read as part of an image path),
    ``localhost``, or an IPv4 address.
    """
    problem = text_problem(value)
    if problem is not None:
        return problem
    if "://" in value:
        return "has a scheme (registries are named by host, e.g. in image names)"
    if "/" in value:
        return "has a path"
    if value.startswith("[") or value.count(":") > 1:
        return "is an IPv6 address: the cluster is IPv4"
    host, sep, port = value.partition(":")
    if sep and (not port.isdigit() or not 1 <= int(port[:6]) <= 65535):
        return f"has the port {shown(port, 12)}; a port is a number from 1 to 65535"
    if _ipv4(host) or host == "localhost":
        return None
    problem = dns_name_problem(host)
    if problem is not None:
        return problem
    if "." not in host:
        return "is a single word, which an image name reads as a path, not a registry"
    return None


def url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an ``http(s)://host[:port][/path]`` URL, or None."""
    problem = text_problem(value)
    if problem is not None:
        return problem
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "has no scheme (http:// or https://)"
    if scheme not in ("http", "https"):
        return f"has the scheme {shown(scheme, 12)}; use http or https"
    hostport, slash, path = rest.partition("/")
    if not _URL_PATH.fullmatch(slash + path):
        return "has a character its path cannot carry"
    if "@" in hostport:
        return "has credentials in it (user@host)"
    if hostport.startswith("[") or hostport.count(":") > 1:
        return "has an IPv6 address: the cluster is IPv4"
    host, sep, port = hostport.partition(":")
    if sep and (not port.isdigit() or not 1 <= int(port[:6]) <= 65535):
        return f"has the port {shown(port, 12)}; a port is a number from 1 to 65535"
    if not host:
        return "has no host"
    if _ipv4(host):
        return None
    problem = dns_name_problem(host.lower())
    return None if problem is None else f"has a host that {problem}"


def san_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a subject alternative name of a certificate, or None:
    an IPv4 or IPv6 address, or a DNS name (``*.`` wildcards allowed)."""
    problem = text_problem(value)
    if problem is not None:
        return problem
    if value.startswith("[") and value.endswith("]") and _ipv6(value):
        return "is an IPv6 address in brackets (brackets belong in URLs, not SANs)"
    if is_ip(value):
        return None
    if "://" in value or "/" in value:
        return "is a URL or has a path (a SAN is a bare name or address)"
    if ":" in value and not _ipv6(value):
        return "has a port (a SAN is a bare name or address)"
    return dns_name_problem(value, wildcard=True)
