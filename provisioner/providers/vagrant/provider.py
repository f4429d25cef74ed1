"""The ``vagrant`` provider: VMs made by the top-level Vagrantfile from the same spec.

Scope: drive the ``vagrant`` command for one cluster. ``up`` writes the resolved settings
(``config.vagrant_config``) to the cluster's state directory, makes sure the box exists
(building ``provisioner/debian12`` offline when named), runs ``vagrant up``, reads ``vagrant
ssh-config`` into ``connections.json`` and the inventory, and pins each VM's SSH host key
from its serial console log (out of band; the box prints the key there on every boot).
``attach`` does the same for VMs a plain ``vagrant up`` already made (the Vagrantfile's
trigger), without starting any. ``down`` runs ``vagrant destroy -f``; ``forget`` drops what
was recorded about destroyed VMs (the Vagrantfile's destroy trigger), never the PKI.
Vagrant's own machine state lives in the cluster's state directory
(``VAGRANT_DOTFILE_PATH``), for plain ``vagrant`` commands too (the Vagrantfile sets it), so
clusters never share it and the checkout stays clean.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.providers import inventory as inv
from provisioner.providers.base import (
    NodeChange,
    NodeStatus,
    ProviderError,
    Reporter,
    UpResult,
    quiet,
)
from provisioner.providers.connections import (
    Connection,
    clear_connections,
    read_connections,
    write_connections,
)
from provisioner.providers.ssh import ClusterSSH, known_hosts_args
from provisioner.providers.vagrant import box
from provisioner.providers.vagrant.config import (
    CONSOLE_DIR,
    DOTFILE_DIR,
    vagrant_config,
    vagrant_dir,
)
from provisioner.resources import vagrantfile_dir as packaged_vagrantfile_dir
from provisioner.spec.models import Cluster, VagrantProvider
from provisioner.spec.topology import Machine, machines
from provisioner.state import cluster_dir, private_dir, write_private

ENV_VAGRANTFILE_DIR = "PROVISIONER_VAGRANTFILE_DIR"
CONFIG_FILE = "config.json"
UP_TIMEOUT_MARGIN = 300  # seconds beyond boot_timeout for `vagrant up` as a whole
HOST_KEY_WAIT = 120.0  # seconds to wait for the console line after `vagrant up`
_STATES = {"running": "running", "not_created": "absent", "shutoff": "stopped",
           "poweroff": "stopped", "saved": "stopped", "paused": "stopped",
           "aborted": "stopped", "preparing": "stopped", "inaccessible": "stopped"}


def vagrantfile_dir() -> Path:
    """The directory holding the project's ``Vagrantfile``: ``$PROVISIONER_VAGRANTFILE_DIR``,
    else the package's copy (package data in a wheel, the checkout's top level otherwise)."""
    explicit = os.environ.get(ENV_VAGRANTFILE_DIR)
    where = Path(explicit) if explicit else packaged_vagrantfile_dir()
    if not (where / "Vagrantfile").is_file():
        raise ProviderError(f"no Vagrantfile in {where}: reinstall provisioner or set "
                            f"{ENV_VAGRANTFILE_DIR} to the directory that holds it")
    return where


def parse_ssh_config(text: str) -> dict[str, Connection]:
    """``vagrant ssh-config`` output as one connection per ``Host`` block."""
    out: dict[str, Connection] = {}
    current: str | None = None
    fields: dict[str, str] = {}

    def flush() -> None:
        if current is None:
            return
        missing = [k for k in ("hostname", "user", "identityfile") if k not in fields]
        if missing:
            raise ProviderError(f"`vagrant ssh-config` for {current} lacks {', '.join(missing)}")
        out[current] = Connection(fields["hostname"], int(fields.get("port", "22")),
                                  fields["user"], Path(fields["identityfile"].strip('"')))

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "host":
            flush()
            current, fields = value.strip(), {}
        elif current is not None:
            fields.setdefault(key.lower(), value.strip())
    flush()
    return out


def parse_status(text: str) -> dict[str, str]:
    """``vagrant status --machine-readable``: machine name -> Vagrant's state name."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) >= 4 and parts[2] == "state" and parts[1]:
            states[parts[1]] = parts[3]
    return states


@dataclass(frozen=True)
class _Paths:
    state: Path

    @property
    def root(self) -> Path:
        return private_dir(vagrant_dir(self.state))

    @property
    def dotfile(self) -> Path:
        return self.root / DOTFILE_DIR

    @property
    def console(self) -> Path:
        return private_dir(self.root / CONSOLE_DIR)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    def log(self, action: str) -> Path:
        return self.root / f"{action}.log"


class VagrantMachines:
    """Machines of one cluster as Vagrant VMs (libvirt or VirtualBox)."""

    def __init__(self, cluster: Cluster, report: Reporter = quiet) -> None:
        provider = cluster.spec.provider
        if not isinstance(provider, VagrantProvider):
            raise ProviderError(f"spec.provider.type is {provider.type!r}, not 'vagrant'")
        self.cluster = cluster
        self.provider = provider
        self.name = cluster.metadata.name
        self.report = report
        self.machines = machines(cluster)
        self.state = cluster_dir(self.name)
        self.paths = _Paths(self.state)

    # --- the vagrant command ------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return vagrant_config(self.cluster, self.paths.root)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VAGRANT_CWD": str(vagrantfile_dir()),
            "VAGRANT_DOTFILE_PATH": str(self.paths.dotfile),
            "PROVISIONER_VAGRANT_CONFIG": str(self.paths.config),
            "VAGRANT_DEFAULT_PROVIDER": self.provider.vagrant_provider,
            "VAGRANT_NO_COLOR": "1",
            "VAGRANT_CHECKPOINT_DISABLE": "1",
        })
        return env

    def _write_config(self) -> dict[str, Any]:
        settings = self._settings()
        write_private(self.paths.config, (json.dumps(settings, indent=1) + "\n").encode())
        return settings

    def _vagrant(self, args: list[str], timeout: float, log: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        if shutil.which("vagrant") is None:
            raise ProviderError("vagrant is not installed: apt-get install vagrant "
                                "vagrant-libvirt (or see https://developer.hashicorp.com/vagrant)")
        argv = ["vagrant", *args]
        if log is None:
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(),
                                      timeout=timeout, stdin=subprocess.DEVNULL, check=False)
            except subprocess.TimeoutExpired:
                raise ProviderError(f"`{' '.join(argv)}` did not finish within "
                                    f"{timeout:.0f}s") from None
        else:
            proc = self._stream(argv, timeout, log)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
            where = f" (full log: {log})" if log is not None else ""
            raise ProviderError(f"`{' '.join(argv)}` failed with exit code {proc.returncode}"
                                f"{where}:\n  " + "\n  ".join(detail))
        return proc

    def _stream(self, argv: list[str], timeout: float, log: Path
                ) -> subprocess.CompletedProcess[str]:
        """Run with output to ``log``, reporting Vagrant's ``==> name:`` step lines."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        with open(log, "w") as fh:
            os.chmod(log, 0o600)
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, env=self._env())
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                lines.append(line.rstrip("\n"))
                if line.startswith("==> ") and "Progress:" not in line:
                    self.report(f"vagrant: {line[4:].rstrip()}")
                if time.monotonic() > deadline:
                    proc.kill()  # the vagrant process this call started
                    proc.wait()
                    raise ProviderError(f"`{' '.join(argv)}` did not finish within "
                                        f"{timeout:.0f}s; see {log}")
            rc = proc.wait()
        return subprocess.CompletedProcess(argv, rc, "\n".join(lines), "\n".join(lines))

    def _states(self) -> dict[str, str]:
        if not self.paths.dotfile.exists():
            return {m.name: "not_created" for m in self.machines}
        proc = self._vagrant(["status", "--machine-readable"], timeout=120)
        return parse_status(proc.stdout)

    # --- checks before anything is made -------------------------------------------------

    def _check_host(self, settings: dict[str, Any]) -> None:
        if self.provider.vagrant_provider != "libvirt":
            return
        plugins = self._vagrant(["plugin", "list"], timeout=120).stdout
        if "vagrant-libvirt" not in plugins:
            raise ProviderError("the vagrant-libvirt plugin is missing: apt-get install "
                                "vagrant-libvirt (or `vagrant plugin install vagrant-libvirt`)")
        if shutil.which("virsh") is not None:
            probe = subprocess.run(["virsh", "-c", "qemu:///system", "version"],
                                   capture_output=True, text=True, check=False, timeout=30,
                                   stdin=subprocess.DEVNULL)
            if probe.returncode != 0:
                raise ProviderError(
                    "libvirtd does not answer on qemu:///system: start it (`systemctl start "
                    "libvirtd`; where PID 1 is not systemd: `virtlogd -d; setsid tini -s -- "
                    "libvirtd &`, tini reaping libvirt's QEMU probes)"
                    f" [{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''}]")
        for note in settings["notes"]:
            self.report(f"note: {note}")

    # --- up -----------------------------------------------------------------------------

    def up(self) -> UpResult:
        """``vagrant up`` every machine, then record logins, pinned host keys and inventory."""
        start = time.monotonic()
        settings = self._write_config()
        self._check_host(settings)
        env = self._env()
        if box.ensure_box(self.provider.box, env, self.report):
            self.report(f"box {self.provider.box} added to Vagrant")
        before = self._states()
        for m in self.machines:
            if before.get(m.name, "not_created") == "not_created":
                # A new VM: an old console log would carry the previous VM's host key.
                (self.paths.console / f"{m.name}.log").unlink(missing_ok=True)
        pending = [m.name for m in self.machines if before.get(m.name) != "running"]
        if pending:
            self.report(f"vagrant up {' '.join(pending)} ({self.provider.vagrant_provider})")
            self._vagrant(["up", f"--provider={self.provider.vagrant_provider}", *pending],
                          timeout=self.provider.boot_timeout * len(pending) + UP_TIMEOUT_MARGIN,
                          log=self.paths.log("up"))
        took = time.monotonic() - start
        changes = tuple(
            NodeChange(m.name, "unchanged" if before.get(m.name) == "running" else
                       ("created" if before.get(m.name, "not_created") == "not_created"
                        else "started"), took if m.name in pending else 0.0)
            for m in self.machines)
        warnings = self._record_logins()
        self.report(f"{len(self.machines)} VMs of {self.name} up in {took:.1f}s")
        return UpResult(changes, self._write_inventory(), tuple(warnings))

    def attach(self) -> UpResult:
        """Record logins, pinned host keys and inventory of VMs that already run.

        For ``provision --machines-running``, which the Vagrantfile's trigger runs after a
        plain ``vagrant up``/``provision``/``reload``: the same records as ``up``, read the same
        way (``vagrant ssh-config``, host keys from the serial consoles), but no VM is made or
        started. Raises ``ProviderError`` naming every VM that does not run.
        """
        start = time.monotonic()
        self._write_config()  # the settings file the Vagrantfile reads for the calls below
        states = self._states()
        down = [f"{m.name} ({states.get(m.name, 'not_created')})" for m in self.machines
                if states.get(m.name) != "running"]
        if down:
            raise ProviderError(
                f"VMs of {self.name} not running: {', '.join(down)}; bring every VM up "
                "(`vagrant up` with this spec, or `provisioner machines up`), or leave the "
                "cluster alone with `vagrant up --no-provision`")
        warnings = self._record_logins()
        self.report(f"{len(self.machines)} VMs of {self.name} running; logins and host keys "
                    f"recorded in {time.monotonic() - start:.1f}s")
        changes = tuple(NodeChange(m.name, "unchanged", 0.0) for m in self.machines)
        return UpResult(changes, self._write_inventory(), tuple(warnings))

    def _record_logins(self) -> list[str]:
        proc = self._vagrant(["ssh-config", *(m.name for m in self.machines)], timeout=120)
        conns = parse_ssh_config(proc.stdout)
        missing = [m.name for m in self.machines if m.name not in conns]
        if missing:
            raise ProviderError(f"`vagrant ssh-config` has no entry for {', '.join(missing)}")
        write_connections(self.state, conns)
        warnings: list[str] = []
        lines: list[str] = []
        for m in self.machines:
            c = conns[m.name]
            key = self._console_host_key(m)
            if key is None:
                key = self._scan_host_key(c)
                warnings.append(f"{m.name}: no host key on the serial console (a box not built "
                                "by provisioner?); trusted the key it offered on first contact")
            names = ",".join(dict.fromkeys([m.name, str(m.address), c.known_hosts_name()]))
            lines.append(f"{names} {key}")
        known = private_dir(self.state / "ssh") / "known_hosts"
        text = "".join(f"{line}\n" for line in lines)
        if not known.exists() or known.read_text() != text:
            write_private(known, text.encode())
        return warnings

    def _console_host_key(self, m: Machine) -> str | None:
        log = self.paths.console / f"{m.name}.log"
        deadline = time.monotonic() + HOST_KEY_WAIT
        while True:
            try:
                text = log.read_bytes().decode(errors="replace")
            except OSError:
                text = ""
            key = box.host_key_from_console(text)
            if key is not None or not text or time.monotonic() > deadline:
                return key
            time.sleep(1)

    def _scan_host_key(self, c: Connection) -> str:
        proc = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(c.port),
                               c.host], capture_output=True, text=True, check=False, timeout=60,
                              stdin=subprocess.DEVNULL)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):
                return f"{parts[1]} {parts[2]}"
        raise ProviderError(f"{c.host}:{c.port}: no SSH host key (ssh-keyscan: "
                            f"{proc.stderr.strip() or 'no answer'})")

    def _write_inventory(self) -> Path:
        conns = read_connections(self.state)
        known = self.state / "ssh" / "known_hosts"
        return inv.write_inventory(
            self.name, self.machines, Path("/nonexistent"),
            f"{known_hosts_args((known,))} -o IdentitiesOnly=yes",
            connections=conns)

    # --- down, status, inventory -------------------------------------------------------

    def down(self, purge: bool = False) -> None:
        """``vagrant destroy -f``; with ``purge`` also forget Vagrant's state and logs."""
        start = time.monotonic()
        if self.paths.dotfile.exists():
            self._write_config()
            self._vagrant(["destroy", "-f"], timeout=600, log=self.paths.log("destroy"))
        self.forget()
        if purge:
            shutil.rmtree(self.paths.root, ignore_errors=True)
        self.report(f"VMs of {self.name} destroyed in {time.monotonic() - start:.1f}s")

    def forget(self, names: Collection[str] | None = None) -> list[str]:
        """Drop what was recorded about destroyed VMs (all, or ``names``): their logins in
        ``connections.json``, pinned host keys and console logs; the inventory once no VM
        is left. The PKI, kubeconfigs, run logs and Vagrant's own state stay. Never calls
        ``vagrant``; returns the names forgotten."""
        known_names = [m.name for m in self.machines]
        gone = set(known_names) if names is None else set(names)
        unknown = sorted(gone - set(known_names))
        if unknown:
            raise ProviderError(f"no VM named {', '.join(unknown)} in cluster {self.name} "
                                f"(its VMs: {', '.join(known_names)})")
        # `vagrant destroy --parallel` forgets its VMs at the same time: one at a time here.
        with open(self.paths.root / "forget.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._forget(gone)
        return [n for n in known_names if n in gone]

    def _forget(self, gone: set[str]) -> None:
        kept = {n: c for n, c in read_connections(self.state).items() if n not in gone}
        if kept:
            write_connections(self.state, kept)
        else:
            clear_connections(self.state)
        known = self.state / "ssh" / "known_hosts"
        if known.exists():
            # Lines are "<machine>,<address>,<ssh endpoint> <key>" (``_record_logins``).
            lines = [line for line in known.read_text().splitlines()
                     if line.strip() and line.split(",", 1)[0].split()[0] not in gone]
            if lines:
                write_private(known, "".join(f"{line}\n" for line in lines).encode())
            else:
                known.unlink()
        if kept:
            self._write_inventory()
        else:
            inv.inventory_path(self.name).unlink(missing_ok=True)
        for m in self.machines:
            if m.name in gone:
                (self.paths.console / f"{m.name}.log").unlink(missing_ok=True)

    def status(self) -> list[NodeStatus]:
        """Vagrant's state of every machine; running ones are asked for systemd's state."""
        self._write_config()
        states = self._states()
        conns = read_connections(self.state)
        out = []
        for m in self.machines:
            state = _STATES.get(states.get(m.name, "not_created"), "stopped")
            c = conns.get(m.name)
            if state != "running" or c is None:
                out.append(NodeStatus(m, state))
                continue
            systemd = self._ssh(c, "systemctl is-system-running")
            out.append(NodeStatus(m, state, ssh=systemd is not None,
                                  systemd=systemd or None))
        return out

    def _ssh(self, c: Connection, command: str) -> str | None:
        logins = ClusterSSH(c.key, self.state / "ssh" / "known_hosts")
        proc = subprocess.run(
            ["ssh", *logins.options(c.port), f"{c.user}@{c.host}", command],
            capture_output=True, text=True, check=False, timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode == 255:
            return None
        return re.sub(r"\s+", " ", proc.stdout).strip()

    def inventory(self) -> Path:
        """The inventory of the running VMs (needs a previous ``up``)."""
        if not read_connections(self.state):
            raise ProviderError(f"no VMs recorded for {self.name}: run `provisioner machines "
                                "up` first")
        return self._write_inventory()
