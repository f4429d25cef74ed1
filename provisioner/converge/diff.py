"""``plan --diff``: per host, the files, binaries and services a provision would change, and
the restarts that would follow. Text files get a unified diff; secrets only "changed".

Scope: turning surveys (``survey``) into text or JSON. Reading a host's current text of a
differing file is the caller's (``fetch_text``), so this module never opens a connection.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from typing import Any

from provisioner.components import ALL
from provisioner.converge.desired import HostWant, WantFile
from provisioner.converge.survey import Difference, HostSurvey

MAX_DIFF_LINES = 200


# Services whose role reloads them when only their configuration or certificates changed
# (playbooks/roles/haproxy: master-worker SIGUSR2, connections kept); a new unit file under
# /etc/systemd or a new package restarts them.
RELOADED_ON_FILES = frozenset({"haproxy"})


def restarts_of(want: HostWant, diffs: list[Difference]) -> list[str]:
    """Services a provision would restart (or start) on the host for ``diffs``; a service
    its role only reloads for these changes is shown as ``<service> (reload)``."""
    by_path = {f.path: f for f in want.files}
    out: list[str] = []
    reloads: list[str] = []
    for d in diffs:
        f = by_path.get(d.target)
        if f is not None and f.kind == "file":
            for service in f.restarts:
                if service in RELOADED_ON_FILES and not f.path.startswith("/etc/systemd/"):
                    reloads.append(service)
                else:
                    out.append(service)
        elif f is not None:  # a binary or package: the services of the components using it
            out += [c.service for c in ALL if c.service in want.units
                    and f.source in c.artifacts]
        elif d.kind in ("unit", "restart"):
            out.append(d.target)
    out += [f"{r} (reload)" for r in reloads if r not in out]
    return list(dict.fromkeys(out))


def _file_diff(f: WantFile, d: Difference, current: str | None) -> list[str]:
    if f.secret:
        return ["    (secret: changed, not shown)"]
    if f.kind != "file" or f.content is None:
        return [f"    {f.kind} from {f.source or 'the artifact source'} "
                f"(sha256 {f.sha256[:12]}...)"]
    if "content differs" not in d.detail and d.detail != "missing":
        return []
    try:
        want_text = f.content.decode()
    except UnicodeDecodeError:
        return ["    (binary content: changed)"]
    if current is None and d.detail != "missing":
        return ["    (current content could not be read)"]
    lines = list(difflib.unified_diff(
        (current or "").splitlines(keepends=True), want_text.splitlines(keepends=True),
        fromfile=f"{f.path} (host)", tofile=f"{f.path} (rendered)"))
    shown = ["    " + line.rstrip("\n") for line in lines[:MAX_DIFF_LINES]]
    if len(lines) > MAX_DIFF_LINES:
        shown.append(f"    ... {len(lines) - MAX_DIFF_LINES} more lines")
    return shown


def diff_text(wants: Mapping[str, HostWant], surveys: Mapping[str, HostSurvey],
              fetch_text: Callable[[str, str], str | None]) -> str:
    """The report ``plan --diff`` prints; ``fetch_text(host, path)`` reads a host's file."""
    out: list[str] = []
    differing = 0
    for name in wants:
        s = surveys.get(name)
        if s is None:
            continue
        if not s.differences:
            out.append(f"{name}: no changes")
            continue
        differing += 1
        want = wants[name]
        by_path = {f.path: f for f in want.files}
        out.append(f"{name}: {len(s.differences)} change(s)"
                   + (f" (could not be surveyed: {s.error})" if s.error is not None else ""))
        for d in s.differences:
            phases = ", ".join(d.phases)
            out.append(f"  ~ {d.kind} {d.target}: {d.detail} [{phases}]")
            f = by_path.get(d.target)
            if f is not None:
                current = None if f.secret or f.kind != "file" or d.detail == "missing" \
                    else fetch_text(name, f.path)
                out += _file_diff(f, d, current)
        restarts = restarts_of(want, s.differences)
        if restarts:
            out.append("  restarts: " + ", ".join(restarts))
    out.append(f"{differing} of {len(wants)} host(s) would change" if differing
               else f"no changes: all {len(wants)} host(s) match the plan")
    return "\n".join(out) + "\n"


def diff_json(wants: Mapping[str, HostWant], surveys: Mapping[str, HostSurvey]) -> str:
    """``plan --diff --json``: per host, its differences and restarts (no file contents)."""
    data: dict[str, Any] = {}
    for name, want in wants.items():
        s = surveys.get(name)
        if s is None:
            continue
        data[name] = {
            "error": None if s.error is None else str(s.error),
            "changes": [{"kind": d.kind, "target": d.target, "detail": d.detail,
                         "phases": list(d.phases), "secret": d.secret}
                        for d in s.differences],
            "restarts": restarts_of(want, s.differences),
        }
    changed = sum(1 for v in data.values() if v["changes"])
    return json.dumps({"changed_hosts": changed, "hosts": data}, indent=1) + "\n"
