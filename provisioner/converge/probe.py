"""The host side of a survey: a read-only report of what one host holds, as JSON.

Scope: this file is sent as is to each host (``python3 -`` over SSH, as root) followed by one
call of ``_main(<request JSON>)``; it uses only the standard library of Python 3.7+ and
changes nothing except its own hash cache. It reports, for what the request names:

- files: sha256, mode, uid and gid (null when missing or not a regular file). Large files
  (binaries) are hashed through a cache keyed by size, mtime, ctime and inode, like git's
  index: writing or chmod-ing a file moves its ctime, which no user call can set back, so a
  changed file is always hashed again. Entries younger than two seconds are not cached.
- paths that must not exist: those that do;
- directories: mode, uid and gid; units: ActiveState and UnitFileState; restart markers;
  live sysctls that differ from the sysctl file; kernel modules neither loaded nor built in;
  Debian packages not installed at a version; addon manifests not applied (record or objects
  missing); whether containerd loaded the CNI config; the cluster identity file's text; the
  installed Kubernetes programs' versions (``--version``, cached like the hashes).

Secrets never leave the host: only digests and metadata are printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from typing import Any

CACHE_MIN_SIZE = 1 << 20
CACHE_SETTLE_NS = 2 * 10**9


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def _load_cache(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: str, cache: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(cache, handle, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def _files(request: dict[str, Any], cache: dict[str, Any], now_ns: int
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {}
    used: dict[str, Any] = {}
    for path, cached in request.get("files", []):
        try:
            st = os.lstat(path)
        except OSError:
            out[path] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            out[path] = None
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        digest = None
        if cached and st.st_size >= CACHE_MIN_SIZE:
            entry = cache.get(path)
            if isinstance(entry, list) and len(entry) == 5 and entry[:4] == key:
                digest = entry[4]
        if digest is None:
            try:
                digest = _sha256(path)
            except OSError:
                out[path] = None
                continue
        if (cached and st.st_size >= CACHE_MIN_SIZE
                and now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > CACHE_SETTLE_NS):
            used[path] = [*key, digest]
        out[path] = [digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
    return out, used


def _versions(programs: dict[str, str], cache: dict[str, Any], used: dict[str, Any],
              now_ns: int) -> dict[str, str]:
    """``{name: "1.37.2"}`` for each installed program of ``programs`` (name -> path), from
    its ``--version`` ("Kubernetes v1.37.2"); cached like the hashes, by size, mtime, ctime
    and inode, so a converged host does not start the programs on every survey."""
    out: dict[str, str] = {}
    for name, path in sorted(programs.items()):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = cache.get("version " + path)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == key:
            version = str(entry[4])
        else:
            rc, text, _ = _run([path, "--version"], timeout=20)
            words = text.split()
            version = words[-1].lstrip("v") if rc == 0 and words else ""
        if version:
            out[name] = version
            if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > CACHE_SETTLE_NS:
                used["version " + path] = [*key, version]
    return out


def _dirs(paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
            continue
        out[path] = ([stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
                     if stat.S_ISDIR(st.st_mode) else None)
    return out


def _run(argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, "", str(exc)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def _units(names: list[str]) -> dict[str, Any]:
    if not names:
        return {}
    rc, out, err = _run(["systemctl", "show", "--property=Id,LoadState,ActiveState,"
                         "UnitFileState", "--",
                         *(n if "." in n else n + ".service" for n in names)])
    result: dict[str, Any] = {n: None for n in names}
    if rc != 0:
        return {"error": err.strip() or "systemctl show failed"}
    blocks = out.split("\n\n")
    for i, name in enumerate(names):
        block = blocks[i] if i < len(blocks) else ""
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        result[name] = {"load": props.get("LoadState", ""),
                        "active": props.get("ActiveState", ""),
                        "enabled": props.get("UnitFileState", "")}
    return result


def _pending(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _norm(value: str) -> str:
    return " ".join(value.split())


def _sysctl(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    drifted = []
    for line in lines:
        text = line.strip()
        if not text or text[0] in "#;" or "=" not in text:
            continue
        key, value = text.split("=", 1)
        key = "".join(key.split())
        try:
            with open("/proc/sys/" + key.replace(".", "/"), encoding="utf-8") as handle:
                live = handle.read()
        except OSError:
            live = None
        if live is None or _norm(live) != _norm(value):
            drifted.append(key)
    return drifted


def _modules(names: list[str]) -> list[str]:
    release = os.uname().release
    try:
        with open(f"/lib/modules/{release}/modules.builtin", encoding="utf-8") as handle:
            builtin = handle.read()
    except OSError:
        builtin = ""
    try:
        with open("/proc/filesystems", encoding="utf-8") as handle:
            filesystems = handle.read().split()
    except OSError:
        filesystems = []
    missing = []
    for name in names:
        if os.path.isdir("/sys/module/" + name) or f"/{name}.ko" in builtin:
            continue
        if name == "br_netfilter" and os.path.isdir("/proc/sys/net/bridge"):
            continue
        if name == "overlay" and "overlay" in filesystems:
            continue
        missing.append(name)
    return missing


def _debs(wanted: list[tuple[str, str]]) -> list[str]:
    if not wanted:
        return []
    _, out, _ = _run(["dpkg-query", "-W", "-f=${Package} ${Status} ${Version}\n", "--",
                      *sorted({p for p, _ in wanted})])
    have: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2:
            have[parts[0]] = parts[1]
    def current(pkg: str, want: str) -> bool:
        # At the bundled version or a later one (a Debian security update): the role never
        # downgrades, so a later version is converged.
        status = have.get(pkg, "")
        if not status.startswith("install ok installed "):
            return False
        got = status.rsplit(" ", 1)[1]
        return got == want or _run(["dpkg", "--compare-versions", got, "ge", want])[0] == 0

    return [p for p, v in wanted if not current(p, v)]


def _addons(spec: dict[str, Any]) -> list[str]:
    missing: list[str] = []
    present: list[str] = []
    for name in spec["files"]:
        path = os.path.join(spec["dir"], name)
        try:
            digest = _sha256(path)
        except OSError:
            missing.append(name)
            continue
        try:
            with open(os.path.join(spec["applied_dir"], name + ".sha256"),
                      encoding="utf-8") as handle:
                record = handle.read().strip()
        except OSError:
            record = ""
        (present if record == digest else missing).append(name)
    if not present:
        return missing
    base = [spec["kubectl"], "--kubeconfig", spec["kubeconfig"], "get", "-o", "name"]
    argv = list(base)
    for name in present:
        argv += ["-f", os.path.join(spec["dir"], name)]
    if _run(argv)[0] == 0:
        return missing
    for name in present:
        if _run([*base, "-f", os.path.join(spec["dir"], name)])[0] != 0:
            missing.append(name)
    return sorted(missing)


def _cni_loaded() -> bool:
    rc, out, _ = _run(["crictl", "info"], timeout=15)
    return rc == 0 and '"lastCNILoadStatus": "OK"' in out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def _main(request_text: str) -> None:
    request = json.loads(request_text)
    started = time.time()
    cache_path = request.get("cache", "")
    cache = _load_cache(cache_path) if cache_path else {}
    files, used = _files(request, cache, time.time_ns())
    report = {
        "files": files,
        "dirs": _dirs(request.get("dirs", [])),
        "present": [p for p in request.get("absent", []) if os.path.lexists(p)],
        "units": _units(request.get("units", [])),
        "pending": _pending(request["pending_dir"]) if request.get("pending_dir") else [],
        "sysctl": _sysctl(request["sysctl_file"]) if request.get("sysctl_file") else [],
        "modules": _modules(request.get("modules", [])),
        "debs": _debs([tuple(d) for d in request.get("debs", [])]),
        "addons": _addons(request["addons"]) if request.get("addons") else [],
        "cni_loaded": _cni_loaded() if request.get("cni_check") else True,
        "identity": _read(request["identity"]) if request.get("identity") else "",
        "versions": _versions(request.get("versions", {}), cache, used, time.time_ns()),
    }
    if not request.get("files"):
        # A request for no files (the early release check) keeps the binaries' entries.
        used = {**cache, **used}
    if cache_path and used != cache:
        _save_cache(cache_path, used)
    report["seconds"] = round(time.time() - started, 3)
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
