"""Per-node cgroups on a host whose PID 1 is not systemd.

Scope: with no systemd on the host there are no scope units, so each node gets a cgroup
made by hand in every mounted hierarchy and its supervisor joins them before starting
systemd-nspawn (``--keep-unit`` makes nspawn use the cgroup it is started in). The node's
systemd then manages that subtree (nspawn's cgroup namespace shows it as the root).

Placement: ``<hierarchy>/provisioner/<cluster>/<node>``; in the memory hierarchy the same path
is nested under the caller's own memory cgroup, so nodes stay inside whatever memory limit
and accounting the caller is subject to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.providers.nspawn.system import signal_pid

# Mount options of a cgroup v1 mount that are not controller names.
_NON_CONTROLLER_OPTIONS = {
    "rw",
    "ro",
    "relatime",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "xattr",
    "clone_children",
    "noprefix",
    "nsdelegate",
    "memory_recursiveprot",
    "favordynmods",
    "memory_localevents",
}
TOP = "provisioner"


def host_cgroup_v1(root: Path = Path("/sys/fs/cgroup")) -> bool:
    """True when this host runs cgroup v1 (legacy or hybrid): no unified hierarchy at root.

    kubelet treats hybrid as v1 as well (it checks the filesystem type of /sys/fs/cgroup).
    """
    return not (root / "cgroup.controllers").is_file()


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the caller's place in it."""

    mountpoint: Path
    controllers: frozenset[str]
    """v1 controllers (``memory``, ``name=systemd``, ...); empty for the v2 hierarchy."""
    own: str
    """The caller's cgroup path in this hierarchy, relative to the mount's root."""

    @property
    def is_memory(self) -> bool:
        """True for the v1 memory hierarchy."""
        return "memory" in self.controllers


def parse_hierarchies(mountinfo: str, proc_cgroup: str) -> list[Hierarchy]:
    """Hierarchies from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` text.

    Only mounts of a hierarchy's root are used (the first one found); our own path comes from
    ``/proc/self/cgroup``.
    """
    own: dict[frozenset[str], str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[frozenset(c for c in parts[1].split(",") if c)] = parts[2]
    out: list[Hierarchy] = []
    seen: set[frozenset[str]] = set()
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, after = pre.split(), post.split()
        if len(fields) < 5 or len(after) < 3 or fields[3] != "/":
            continue
        fstype, options = after[0], after[2].split(",")
        key: frozenset[str]
        if fstype == "cgroup2":
            key = frozenset()
        elif fstype == "cgroup":
            key = frozenset(
                o
                for o in options
                if (o not in _NON_CONTROLLER_OPTIONS and "=" not in o) or o.startswith("name=")
            )
        else:
            continue
        if key in seen or key not in own:
            continue
        seen.add(key)
        out.append(Hierarchy(Path(fields[4]), key, own[key]))
    return out


def host_hierarchies() -> list[Hierarchy]:
    """The hierarchies mounted on this host, as seen by the calling process."""
    return parse_hierarchies(
        Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
    )


def node_cgroup_dirs(hierarchies: list[Hierarchy], cluster: str, node: str) -> list[Path]:
    """The cgroup directories of one node, one per hierarchy."""
    dirs = []
    for h in hierarchies:
        parent = h.mountpoint / h.own.lstrip("/") if h.is_memory else h.mountpoint
        dirs.append(parent / TOP / cluster / node)
    return dirs


def create(dirs: list[Path]) -> None:
    """Make the directories; new cpuset cgroups start with no CPUs, so inherit them."""
    for cg in dirs:
        cg.mkdir(parents=True, exist_ok=True)
        if (cg / "cpuset.cpus").exists():
            _inherit_cpuset(cg)


def _inherit_cpuset(cg: Path) -> None:
    chain = [cg]
    while (chain[-1].parent / "cpuset.cpus").exists():
        chain.append(chain[-1].parent)
    for parent, child in zip(reversed(chain), list(reversed(chain))[1:], strict=False):
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (child / name).read_text().strip():
                (child / name).write_text((parent / name).read_text())


def processes(cg: Path) -> list[int]:
    """Pids in ``cg`` and every cgroup below it."""
    pids: list[int] = []
    for dirpath, _dirs, files in os.walk(cg):
        if "cgroup.procs" in files:
            try:
                text = (Path(dirpath) / "cgroup.procs").read_text()
            except OSError:
                continue
            pids.extend(int(p) for p in text.split())
    return pids


def remove(dirs: list[Path], timeout: float = 5.0) -> list[Path]:
    """Kill what is left in the node's cgroups and remove them (deepest first).

    Only processes inside these cgroups are signalled: they belong to the node. Returns the
    directories that could not be removed.
    """
    deadline = time.monotonic() + timeout
    left = [cg for cg in dirs if cg.is_dir()]
    while left:
        for cg in left:
            for pid in processes(cg):
                signal_pid(pid, signal.SIGKILL)
        for cg in left:
            for dirpath, _dirs, _files in os.walk(cg, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
        left = [cg for cg in left if cg.is_dir()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for cg in dirs:
        # The per-cluster and top directories go when their last node is gone (rmdir only
        # removes empty directories, so other clusters' cgroups are safe).
        for parent in (cg.parent, cg.parent.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()
    return left


def memory_usage(dirs: list[Path]) -> int | None:
    """Bytes charged to the node's memory cgroup (v1 or v2), if known."""
    for cg in dirs:
        for name in ("memory.usage_in_bytes", "memory.current"):
            try:
                return int((cg / name).read_text())
            except (OSError, ValueError):
                continue
    return None
