"""SSH for providers: the per-cluster key pair, pinned host keys and readiness checks.

Scope: what a provider needs to hand working SSH access to the rest of the pipeline, and
where a cluster's own key and pinned host keys live. Host keys of machines the provider
made are known in advance, so they are pinned in a ``known_hosts`` file instead of
switching host key checking off. Which login each host gets is ``providers.reach``'s.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from provisioner.providers.base import ProviderError
from provisioner.state import cluster_dir, private_dir


def default_key_path(state: Path) -> Path:
    """The cluster's own private key in its state directory ``state`` (``cluster_ssh`` makes
    it): the login key of a made machine when neither the host nor spec.ssh names one."""
    return state / "ssh" / "id_ed25519"


def pinned_known_hosts(state: Path) -> Path:
    """The pinned host keys of the cluster whose state directory is ``state``."""
    return state / "ssh" / "known_hosts"


def known_hosts_option(files: tuple[Path, ...]) -> str:
    """The ssh option ``UserKnownHostsFile`` for ``files``, each double-quoted: ssh splits
    the value on whitespace, so a state directory under a path with a space would otherwise
    name files that do not exist (and no host key would be trusted)."""
    quoted = " ".join('"' + str(f).replace("\\", "\\\\").replace('"', '\\"') + '"'
                      for f in files)
    return f"UserKnownHostsFile={quoted}"


def known_hosts_args(files: tuple[Path, ...]) -> str:
    """``known_hosts_option`` as one word of an Ansible ssh argument string (Ansible
    splits those with shlex), with checking on."""
    return f"-o {shlex.quote(known_hosts_option(files))} -o StrictHostKeyChecking=yes"


@dataclass(frozen=True)
class ClusterSSH:
    """The SSH material of one cluster."""

    private_key: Path
    known_hosts: Path

    @property
    def public_key(self) -> Path:
        """The ``.pub`` file next to the private key."""
        return self.private_key.with_name(self.private_key.name + ".pub")

    def options(self, port: int = 22) -> list[str]:
        """ssh options (without the destination) for a batch login to a machine."""
        return [
            "-i", str(self.private_key),
            "-p", str(port),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", known_hosts_option((self.known_hosts,)),
            "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=3",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def common_args(self) -> str:
        """``ansible_ssh_common_args``: pin the host keys the same way."""
        return f"{known_hosts_args((self.known_hosts,))} -o IdentitiesOnly=yes"


def cluster_ssh(cluster: str, private_key: Path | None = None) -> ClusterSSH:
    """The cluster's key (``<state>/clusters/<name>/ssh/id_ed25519`` unless the spec names
    one) and its ``known_hosts``; the key pair is made on first use."""
    state = cluster_dir(cluster)
    private_dir(state / "ssh")
    key = private_key if private_key is not None else default_key_path(state)
    result = ClusterSSH(private_key=key, known_hosts=pinned_known_hosts(state))
    if private_key is None and not key.exists():
        _keygen(key, f"provisioner-{cluster}")
    if not key.exists() or not result.public_key.exists():
        raise ProviderError(
            f"SSH key {key} (and {result.public_key}) not found: create it with "
            f"`ssh-keygen -t ed25519 -f {key}` or remove spec.ssh.privateKeyFile"
        )
    return result


def _keygen(key: Path, comment: str) -> None:
    tmp = key.with_name(f".{key.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.with_name(tmp.name + ".pub").unlink(missing_ok=True)
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ProviderError(f"ssh-keygen failed: {proc.stderr.strip()}")
    tmp.with_name(tmp.name + ".pub").replace(key.with_name(key.name + ".pub"))
    tmp.replace(key)  # the private key last: its presence means the pair is complete
    key.chmod(0o600)


def known_hosts_lines(name: str, address: IPv4Address, host_keys: list[str]) -> list[str]:
    """known_hosts lines for one machine: each public host key under its name and address."""
    lines = []
    for key in host_keys:
        parts = key.split()
        if len(parts) >= 2:
            lines.append(f"{name},{address} {parts[0]} {parts[1]}")
    return lines


def tcp_open(address: IPv4Address, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``address:port`` succeeds."""
    try:
        with socket.create_connection((str(address), port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_run(
    ssh: ClusterSSH,
    user: str,
    address: IPv4Address,
    port: int,
    command: str,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a machine; never raises for a failed command or login."""
    argv = ["ssh", *ssh.options(port), f"{user}@{address}", command]
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", f"timed out after {timeout}s")


def wait_for_ssh(
    ssh: ClusterSSH,
    user: str,
    address: IPv4Address,
    port: int,
    timeout: float,
    still_starting: Callable[[], str | None],
) -> float:
    """Wait until a real login runs ``true``; return the seconds waited.

    ``still_starting`` returns a reason to give up (the machine's process died) or None.
    """
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        reason = still_starting()
        if reason is not None:
            raise ProviderError(reason)
        if tcp_open(address, port):
            proc = ssh_run(ssh, user, address, port, "true", timeout=10)
            if proc.returncode == 0:
                return time.monotonic() - start
            last = proc.stderr.strip()
        time.sleep(0.1)
    raise ProviderError(
        f"{address}: no SSH login within {timeout:.0f}s"
        + (f" (last error: {last})" if last else "")
    )
