"""Jinja filters for the provisioner playbooks: manifest selection kept out of templates."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any


def provisioner_owned_by(
    files: list[dict[str, Any]], components: list[str]
) -> list[dict[str, Any]]:
    """Manifest entries owned by any of ``components`` (entry.components intersects them)."""
    wanted = set(components)
    return [entry for entry in files if wanted.intersection(entry.get("components", []))]


def provisioner_artifact_list(
    artifacts: dict[str, dict[str, Any]], names: list[str]
) -> list[dict[str, Any]]:
    """The named artifacts as a list, each carrying its ``name``; unknown names are skipped."""
    return [{**artifacts[name], "name": name} for name in names if name in artifacts]


def _bundle_members(unpacked: str) -> list[str] | None:
    """Files of an unpacked ``.deb`` bundle (its ``.sha256sums`` list and that file), or
    None before the controller unpacked it."""
    try:
        with open(os.path.join(unpacked, ".sha256sums"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    names = [line.partition("  ")[2].removeprefix("./") for line in lines]
    return sorted(n for n in names if n) + [".sha256sums"]


def provisioner_artifact_installs(
    artifacts: dict[str, dict[str, Any]], names: list[str], cache: str,
    deb_cache: str | None = None,
) -> list[dict[str, Any]]:
    """One {name, src, dest, mode} per installed file of the binary and tar artifacts.

    ``src`` is a controller path: the artifact itself for a binary, the unpacked member under
    ``cache/<sha256>/`` for a tar. With ``deb_cache``, the files of each unpacked ``deb``
    bundle too, placed under ``deb_cache/<name>-<sha256>/`` for apt to install from.
    """
    installs: list[dict[str, Any]] = []
    for art in provisioner_artifact_list(artifacts, names):
        if art["kind"] == "deb":
            members = _bundle_members(f"{cache}/{art['sha256']}") if deb_cache else None
            root = f"{deb_cache}/{art['name']}-{art['sha256']}"
            installs += [{"name": art["name"], "src": f"{cache}/{art['sha256']}/{m}",
                          "dest": f"{root}/{m}", "mode": "0644"} for m in members or []]
            continue
        for item in art.get("install", []):
            if art["kind"] == "binary":
                src = art["path"]
            elif art["kind"] == "tar":
                src = f"{cache}/{art['sha256']}/{item['member'].lstrip('/')}"
            else:
                continue
            installs.append(
                {
                    "name": art["name"],
                    "src": src,
                    "dest": item["dest"],
                    "mode": item.get("mode", "0755"),
                }
            )
    return installs


def provisioner_foreign_ports(listening: str, wanted: dict[Any, str]) -> list[str]:
    """Wanted ports held by a process other than their expected owner, as "port (name)".

    ``listening`` is "port/process port/process ..." as printed by preflight's `ss` probe;
    ``wanted`` maps port -> expected process name (a re-run finds our own services there).
    """
    held: dict[str, str] = {}
    for pair in listening.split():
        port, _, name = pair.partition("/")
        held.setdefault(port, name)
    return [
        f"{port} ({held[str(port)] or 'unknown'})"
        for port, owner in sorted(wanted.items(), key=lambda kv: int(kv[0]))
        if str(port) in held and held[str(port)] != owner
    ]


def _sha1(path: str) -> str:
    digest = hashlib.sha1()  # matches `sha1sum` on the host; not a security use
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provisioner_probe_script(paths: list[str]) -> str:
    """Read-only shell script printing "sha1 mode owner group path" for each existing file."""
    quoted = " ".join("'" + p.replace("'", "'\\''") + "'" for p in paths)
    return (
        f'for p in {quoted}; do [ -f "$p" ] && '
        'echo "$(sha1sum < "$p" | cut -d\' \' -f1) $(stat -c \'%a %U %G\' "$p") $p"; done; true'
    )


def provisioner_stale(
    items: list[dict[str, Any]],
    probe: list[str],
    dest: str = "path",
    src: str = "src",
    src_root: str = "",
) -> list[dict[str, Any]]:
    """Items whose host file (``item[dest]``) is missing or differs from the controller source.

    ``probe`` is the output of :func:`provisioner_probe_script`; a file differs when its sha1,
    mode or owner (root:root) differ. Lets a no-op run cost one round trip per host instead of
    one per file, while ``copy`` still does the actual (checked) transfer of stale files.
    """
    found: dict[str, tuple[str, int, str, str]] = {}
    for line in probe:
        parts = line.split(" ", 4)
        if len(parts) == 5:
            found[parts[4]] = (parts[0], int(parts[1], 8), parts[2], parts[3])
    stale = []
    for item in items:
        have = found.get(item[dest])
        want_mode = int(str(item.get("mode", "0644")), 8)
        source = os.path.join(src_root, item[src]) if src_root else item[src]
        if have is None or have[1:] != (want_mode, "root", "root") or have[0] != _sha1(source):
            stale.append(item)
    return stale


def provisioner_pack_items(entries: list[dict[str, Any]], src_root: str) -> list[dict[str, Any]]:
    """Manifest entries as the pack script's items: {src (controller file), dest, mode}."""
    return [{"src": os.path.join(src_root, e["src"]), "dest": e["path"], "mode": e["mode"]}
            for e in entries]


ROLLOUT_KINDS = ("Deployment", "DaemonSet", "StatefulSet")


def provisioner_rollouts(entries: list[dict[str, Any]], src_root: str) -> list[dict[str, str]]:
    """Workloads (Deployment, DaemonSet, StatefulSet) of the rendered manifests ``entries``,
    as {file, addon, kind, namespace, name, selector}, in file order: what ``kubectl rollout
    status`` waits for; ``addon`` is the file name without its order prefix and suffix, and
    ``selector`` the workload's matchLabels (to find its pods when it does not roll out).

    Read from the controller's rendered tree, so the host needs no YAML parser.
    """
    import yaml  # ansible-core depends on PyYAML

    found: list[dict[str, str]] = []
    for entry in sorted(entries, key=lambda e: str(e["path"])):
        with open(os.path.join(src_root, entry["src"]), encoding="utf-8") as handle:
            docs = list(yaml.safe_load_all(handle))
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") in ROLLOUT_KINDS:
                meta = doc.get("metadata") or {}
                labels = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                file = os.path.basename(str(entry["path"]))
                found.append({
                    "file": file,
                    "addon": re.sub(r"^\d+-|\.ya?ml$", "", file),
                    "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                    "kind": str(doc["kind"]).lower(),
                    "namespace": str(meta.get("namespace", "default")),
                    "name": str(meta["name"]),
                })
    return found


def provisioner_etcd_staying(members: list[dict[str, Any]], leaving_peers: list[str]
                             ) -> list[dict[str, Any]]:
    """The etcd members (``etcdctl member list -w json``'s) whose peer URLs are none of
    ``leaving_peers``: those that stay when the hosts at those URLs leave. A member that
    never started has no name, so members are told apart by peer URL."""
    leaving = set(leaving_peers)
    return [m for m in members if not leaving & set(m.get("peerURLs") or [])]


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        """Filters by name."""
        return {
            "provisioner_owned_by": provisioner_owned_by,
            "provisioner_artifact_list": provisioner_artifact_list,
            "provisioner_artifact_installs": provisioner_artifact_installs,
            "provisioner_foreign_ports": provisioner_foreign_ports,
            "provisioner_probe_script": provisioner_probe_script,
            "provisioner_stale": provisioner_stale,
            "provisioner_pack_items": provisioner_pack_items,
            "provisioner_rollouts": provisioner_rollouts,
            "provisioner_etcd_staying": provisioner_etcd_staying,
        }
