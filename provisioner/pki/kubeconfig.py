"""Kubeconfig documents for cluster components and the admin.

Scope: rendering only -- one cluster, one user, one context, either pointing at files placed on
a host (byte-stable, golden-testable) or embedding base64 PEM data (the admin kubeconfig kept in
the state directory). Errors name the argument that is wrong, never its value.
"""

from __future__ import annotations

import base64
import json

from provisioner.pki.errors import PkiError


def _credential(
    what: str, field: str, path_arg: str, path: str | None, data_arg: str, data: bytes | None
) -> tuple[str, str]:
    if path is not None and data is None:
        if not path:
            raise PkiError(f"{what}: {path_arg} is empty; fix: give the file path on the host")
        return field, path
    if data is not None and path is None:
        if not data:
            raise PkiError(f"{what}: {data_arg} is empty; fix: pass the PEM bytes")
        return f"{field}-data", base64.b64encode(data).decode("ascii")
    got = "both" if path is not None else "neither"
    raise PkiError(f"{what}: give exactly one of {path_arg} or {data_arg} (got {got})")


def kubeconfig(
    cluster_name: str,
    server: str,
    user: str,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    ca_data: bytes | None = None,
    cert_data: bytes | None = None,
    key_data: bytes | None = None,
) -> str:
    """A kubeconfig YAML for ``user`` on ``cluster_name``; deterministic for equal arguments.

    For each of CA, client certificate and client key give exactly one of the ``*_file`` path
    or the ``*_data`` PEM bytes (embedded base64); :class:`PkiError` (a ``ValueError``)
    otherwise. The context is named ``<user>@<cluster_name>`` and is the current one.
    """
    what = f"kubeconfig {user}@{cluster_name}"
    for arg, value in (("cluster_name", cluster_name), ("user", user)):
        if not value:
            raise PkiError(f"{what}: {arg} is empty; fix: give a non-empty {arg}")
    if not server.startswith("https://"):
        raise PkiError(f"{what}: server must be an https:// URL; fix: e.g. https://10.0.0.10:6443")
    ca = _credential(what, "certificate-authority", "ca_file", ca_file, "ca_data", ca_data)
    cert = _credential(what, "client-certificate", "cert_file", cert_file, "cert_data", cert_data)
    key = _credential(what, "client-key", "key_file", key_file, "key_data", key_data)
    context = f"{user}@{cluster_name}"
    # Hand-written YAML with JSON-quoted scalars (valid YAML, byte-stable): a YAML emitter
    # costs milliseconds per document, which adds up to seconds for 1,000 nodes.
    q = json.dumps
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {q(cluster_name)}\n"
        "  cluster:\n"
        f"    {ca[0]}: {q(ca[1])}\n"
        f"    server: {q(server)}\n"
        "users:\n"
        f"- name: {q(user)}\n"
        "  user:\n"
        f"    {cert[0]}: {q(cert[1])}\n"
        f"    {key[0]}: {q(key[1])}\n"
        "contexts:\n"
        f"- name: {q(context)}\n"
        "  context:\n"
        f"    cluster: {q(cluster_name)}\n"
        f"    user: {q(user)}\n"
        f"current-context: {q(context)}\n"
        "preferences: {}\n"
    )
