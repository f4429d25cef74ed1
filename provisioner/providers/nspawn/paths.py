"""Where the nspawn provider keeps machine data, and the names it derives.

Scope: pure path and name computation (no I/O), so it is unit-testable without root.
Layout under the data root (``$PROVISIONER_NSPAWN_DIR`` or ``/var/lib/provisioner/nspawn``)::

    images/base-<suite>/          cached base root filesystem, shared by all clusters
    images/debootstrap-cache/     .deb files debootstrap downloaded
    images/apt-proxy/             cache and logs of the apt proxy on the bridge
    clusters/<cluster>/cluster.json
    clusters/<cluster>/<node>/{rootfs,console.log,runner.pid,nspawn.pid,cgroups}

The images directory can be moved with ``$PROVISIONER_NSPAWN_IMAGE_DIR`` so that tests with a
private data root still share one cached image. Host-wide runtime files (pid of the apt proxy,
locks) live in ``/run/provisioner`` because they describe this boot of the host.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

ENV_DATA_DIR = "PROVISIONER_NSPAWN_DIR"
ENV_IMAGE_DIR = "PROVISIONER_NSPAWN_IMAGE_DIR"
DEFAULT_DATA_DIR = Path("/var/lib/provisioner/nspawn")
RUN_DIR = Path("/run/provisioner")

# Interface names hold at most 15 bytes and nspawn names the host end "vb-<machine>"; when the
# name does not fit nspawn hashes it in a way we cannot predict, so we pick names that fit.
_IFNAME_MAX = 15
_VETH_PREFIX = "vb-"


def data_root() -> Path:
    """Root of the provider's data: ``$PROVISIONER_NSPAWN_DIR`` or the default."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else DEFAULT_DATA_DIR


def image_dir() -> Path:
    """Directory of cached images: ``$PROVISIONER_NSPAWN_IMAGE_DIR`` or ``<root>/images``."""
    env = os.environ.get(ENV_IMAGE_DIR)
    return Path(env) if env else data_root() / "images"


def base_image(suite: str) -> Path:
    """The cached base root filesystem for a Debian suite."""
    return image_dir() / f"base-{suite}"


def cluster_data_dir(cluster: str) -> Path:
    """Machine data of one cluster (not its secrets: those are in the state directory)."""
    return data_root() / "clusters" / cluster


@dataclass(frozen=True)
class NodePaths:
    """Files of one node."""

    dir: Path

    @property
    def rootfs(self) -> Path:
        """The node's root filesystem (a copy of the base image)."""
        return self.dir / "rootfs"

    @property
    def console(self) -> Path:
        """The node's console and supervisor log."""
        return self.dir / "console.log"

    @property
    def runner_pid(self) -> Path:
        """Pid of the supervisor process."""
        return self.dir / "runner.pid"

    @property
    def nspawn_pid(self) -> Path:
        """Pid of the current systemd-nspawn process."""
        return self.dir / "nspawn.pid"

    @property
    def cgroups(self) -> Path:
        """The node's cgroup directories, one per line."""
        return self.dir / "cgroups"


def node_paths(cluster: str, node: str) -> NodePaths:
    """Paths of ``node`` in ``cluster``."""
    return NodePaths(cluster_data_dir(cluster) / node)


def machine_name(cluster: str, node: str) -> str:
    """The nspawn machine name: the node name when ``vb-<name>`` fits an interface name.

    Longer names become ``p`` + a hash of cluster and node, so that the host-side veth
    (``vb-<machine>``) is predictable and ``down`` can remove exactly that link.
    """
    if len(_VETH_PREFIX) + len(node) <= _IFNAME_MAX:
        return node
    digest = hashlib.sha256(f"{cluster}/{node}".encode()).hexdigest()
    return "p" + digest[: _IFNAME_MAX - len(_VETH_PREFIX) - 1]


def veth_name(cluster: str, node: str) -> str:
    """Host end of the node's veth pair, as systemd-nspawn names it."""
    return _VETH_PREFIX + machine_name(cluster, node)
