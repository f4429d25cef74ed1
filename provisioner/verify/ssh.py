"""SSH for verify: run short read-only commands on hosts with pinned host keys (paramiko).

Scope: ``SshRunner`` (the protocol checks use, faked in tests), ``ParamikoRunner`` and
``--trust-on-first-use``. Where and as whom each host is reached, and which host keys are
trusted, comes from ``provisioner.providers.reach`` (as for Ansible). Host keys are never
accepted blindly: machines a provider made (nspawn, vagrant) are checked against the
cluster's pinned ``<state>/ssh/known_hosts``; static hosts also against the user's
``~/.ssh/known_hosts``. An unknown key is a clear failure.
One connection per host is shared by every check; a failed login is remembered, so a down
host costs one connect timeout, not one per check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import shlex
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import paramiko

from provisioner.plan.model import HostPlan, Plan
from provisioner.providers.reach import Reach, reach
from provisioner.providers.ssh import pinned_known_hosts

# paramiko's transport thread logs a failed login's traceback at ERROR; with no logging set
# up, Python prints it to stderr ("Exception (client): Error reading SSH protocol banner" and
# the stack). The failure is reported by SshUnavailable, with its hint, instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

RETRY_PAUSE = 1.0  # seconds before a slow host's second login

SshErrorKind = Literal["hostkey-unknown", "hostkey-mismatch", "auth", "refused", "timeout",
                       "unreachable", "key-missing", "ssh"]


@dataclass(frozen=True)
class CommandResult:
    """A finished remote command."""

    exit_status: int  # -1 when it timed out
    stdout: str
    stderr: str


class SshUnavailable(Exception):
    """No SSH session to a host: every SSH-based check of that host is skipped."""

    def __init__(self, host: str, kind: SshErrorKind, detail: str, hint: str,
                 slow: bool = False) -> None:
        super().__init__(f"{host}: {detail}")
        self.host = host
        self.kind: SshErrorKind = kind
        self.detail = detail
        self.hint = hint
        self.slow = slow  # the host answered TCP but not the SSH login in time


class SshRunner(Protocol):
    """Runs a command on a host; raises ``SshUnavailable`` when it cannot log in."""

    def run(self, host: HostPlan, command: str, timeout: float, root: bool,
            stdin: bytes | None = None) -> CommandResult:
        """Run ``command`` (through ``sudo -n`` when ``root`` and the login is not root),
        feeding it ``stdin`` when given."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


def ssh_settings(plan: Plan, state_dir: Path) -> dict[str, Reach]:
    """The logins verify, the survey and the identity check use: ``providers.reach``'s,
    the same Ansible's inventory is rendered from."""
    return reach(plan, state_dir)


def _known_line(addr: str, port: int, key: paramiko.PKey) -> str:
    host = addr if port == 22 else f"[{addr}]:{port}"
    return f"{host} {key.get_name()} {key.get_base64()}"


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def trust_on_first_use(plan: Plan, state_dir: Path, timeout: float = 10.0) -> list[str]:
    """Record the host key of every host no trusted file knows yet in
    ``<state>/ssh/known_hosts`` (0600), returning one line per recorded key with its
    fingerprint. A host whose key is known and differs is never re-recorded: it raises
    ``SshUnavailable`` (a reinstalled host or a man in the middle)."""
    settings = ssh_settings(plan, state_dir)
    dest = pinned_known_hosts(state_dir)
    recorded: list[str] = []
    new_lines: list[str] = []
    for h in plan.hosts:
        s = settings[h.name]
        addr = s.host
        keys = paramiko.HostKeys()
        for f in s.known_hosts:
            if f.is_file():
                keys.load(str(f))
        lookup = addr if s.port == 22 else f"[{addr}]:{s.port}"
        try:
            sock = socket.create_connection((addr, s.port), timeout=timeout)
        except OSError as exc:
            raise SshUnavailable(h.name, "unreachable", f"{addr}:{s.port}: {exc}",
                                 f"is {h.name} up and reachable from here?") from None
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
        except paramiko.SSHException as exc:
            raise SshUnavailable(h.name, "ssh", f"{addr}:{s.port}: {exc}",
                                 f"try `ssh -p {s.port} {s.user}@{addr}` by hand") from None
        finally:
            transport.close()
        known = keys.lookup(lookup)
        if known is not None and key.get_name() in known:
            if known[key.get_name()].asbytes() != key.asbytes():
                raise SshUnavailable(
                    h.name, "hostkey-mismatch",
                    f"{addr}:{s.port}: presents {key.get_name()} {_fingerprint(key)}, which "
                    "differs from the trusted key", "if the host was reinstalled, remove "
                    f"its old line (`ssh-keygen -R {lookup}`) after checking the new "
                    "fingerprint; otherwise treat it as a possible man-in-the-middle")
            continue
        if known is not None:  # known under another key type: trusted already
            continue
        new_lines.append(_known_line(addr, s.port, key))
        recorded.append(f"{h.name} ({lookup}): recorded {key.get_name()} "
                        f"{_fingerprint(key)}")
    if new_lines:
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = dest.read_text() if dest.is_file() else ""
        dest.write_text(old + "".join(line + "\n" for line in new_lines))
        dest.chmod(0o600)
    return recorded


def _active(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


class ParamikoRunner:
    """``SshRunner`` over paramiko with ``RejectPolicy``: unknown host keys fail."""

    def __init__(self, settings: Mapping[str, Reach], connect_timeout: float) -> None:
        self._settings = settings
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._clients: dict[str, paramiko.SSHClient | SshUnavailable] = {}

    def _client(self, host: HostPlan) -> paramiko.SSHClient:
        with self._lock:
            host_lock = self._host_locks.setdefault(host.name, threading.Lock())
        with host_lock:
            got = self._clients.get(host.name)
            if isinstance(got, paramiko.SSHClient) and not _active(got):
                got.close()  # the host closed the connection (rebooted, sshd restarted)
                got = None
            if got is None:
                try:
                    got = self._connect(host)
                except SshUnavailable as exc:
                    got = exc
                self._clients[host.name] = got
        if isinstance(got, SshUnavailable):
            raise got
        return got

    def _connect(self, host: HostPlan) -> paramiko.SSHClient:
        """Log in to ``host``. A host that accepted the TCP connection but was too slow to
        send its banner or finish the login (an sshd on an overloaded machine: seen on a
        21-node lab cluster at load 80, "Error reading SSH protocol banner", then "No
        existing session") is tried again, with twice the timeout; a host that refuses,
        does not answer, or fails the host key or authentication is not."""
        try:
            return self._connect_once(host, self._timeout)
        except SshUnavailable as exc:
            if not exc.slow:
                raise
        time.sleep(RETRY_PAUSE)
        try:
            return self._connect_once(host, self._timeout * 2)
        except SshUnavailable as exc:
            if not exc.slow:
                raise
            s = self._settings[host.name]
            raise SshUnavailable(
                host.name, exc.kind, f"{s.user}@{s.host}:{s.port}: accepted the connection "
                f"but did not complete the SSH login, twice (within {self._timeout:g}s, then "
                f"{self._timeout * 2:g}s): {exc.detail.rsplit(': ', 1)[-1]}",
                f"is {host.name} overloaded (its load, sshd's MaxStartups)? try `ssh -p "
                f"{s.port} {s.user}@{s.host}` by hand", slow=True) from None

    def _connect_once(self, host: HostPlan, timeout: float) -> paramiko.SSHClient:
        s = self._settings[host.name]
        addr = s.host
        where = f"{s.user}@{addr}:{s.port}"
        files = [f for f in s.known_hosts if f.is_file()]
        known = " and ".join(str(f) for f in s.known_hosts) or "no known_hosts file"
        if s.key is not None and not s.key.is_file():
            raise SshUnavailable(host.name, "key-missing", f"SSH key {s.key} does not exist",
                                 "create it or fix spec.ssh.privateKeyFile; nspawn clusters "
                                 "get theirs from `provisioner machines up`")
        client = paramiko.SSHClient()
        try:
            for f in files:
                client.load_host_keys(str(f))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(addr, port=s.port, username=s.user,
                           key_filename=str(s.key) if s.key is not None else None,
                           timeout=timeout, banner_timeout=timeout,
                           auth_timeout=timeout, allow_agent=s.key is None,
                           look_for_keys=s.key is None)
        except paramiko.BadHostKeyException:
            client.close()
            raise SshUnavailable(
                host.name, "hostkey-mismatch",
                f"{where}: host key differs from the one pinned in {known}",
                f"if {host.name} was reinstalled, remove its old line with `ssh-keygen -R "
                f"{addr} -f <file>` ({known}) and add the new key after checking its "
                "fingerprint; "
                "otherwise treat it as a possible man-in-the-middle") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshUnavailable(
                host.name, "auth", f"{where}: authentication failed ({exc})",
                f"check that the public key of {s.key or 'your SSH key'} is in "
                f"~{s.user}/.ssh/authorized_keys on {host.name}") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            raise SshUnavailable(
                host.name, "refused", f"{where}: connection refused ({exc.strerror})",
                f"start sshd on {host.name} (is the machine up? `provisioner machines "
                "status` for nspawn clusters)") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise SshUnavailable(
                    host.name, "hostkey-unknown", f"{where}: host key unknown (not in {known})",
                    f"check the host's fingerprint, then add its key to "
                    f"{s.known_hosts[-1] if s.known_hosts else '~/.ssh/known_hosts'} "
                    f"(`ssh-keyscan -p {s.port} {addr}`), or run `provisioner provision "
                    "--trust-on-first-use`, which records and prints it (host keys are "
                    "always checked)") from None
            raise SshUnavailable(host.name, "ssh", f"{where}: {exc}",
                                 f"try `ssh -p {s.port} {s.user}@{addr}` by hand",
                                 slow=True) from None
        except EOFError:
            client.close()
            raise SshUnavailable(host.name, "ssh", f"{where}: the host closed the connection "
                                 "while logging in", f"try `ssh -p {s.port} {s.user}@{addr}` "
                                 "by hand; is sshd on it overloaded (MaxStartups)?",
                                 slow=True) from None
        except TimeoutError:
            client.close()
            raise SshUnavailable(host.name, "timeout",
                                 f"{where}: no answer within {timeout:g}s",
                                 f"is {host.name} up and reachable from here?") from None
        except OSError as exc:
            client.close()
            raise SshUnavailable(host.name, "unreachable",
                                 f"{where}: {exc.strerror or exc}",
                                 f"is {host.name} up and reachable from here?") from None
        return client

    def _started(self, host: HostPlan, command: str, timeout: float
                 ) -> paramiko.Channel | CommandResult:
        """A session channel to ``host`` on which ``command`` has started. When the channel
        cannot be opened or the host refuses the command, the connection is made again and
        the command tried once more: a host that closed the connection since the last
        command (a reboot, an sshd restart) never ran it, so trying again is safe."""
        for attempt in (1, 2):
            client = self._client(host)
            transport = client.get_transport()
            chan: paramiko.Channel | None = None
            try:
                if transport is None:
                    raise EOFError("not connected")
                chan = transport.open_session(timeout=timeout)
                chan.settimeout(timeout)
                chan.exec_command(command)  # waits for the host to accept it
                return chan
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if chan is not None:
                    with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                        chan.close()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    return CommandResult(-1, "", f"SSH session error: "
                                                 f"{str(exc) or type(exc).__name__}")
                self._forget(host, client)
        raise AssertionError("unreachable")

    def _forget(self, host: HostPlan, client: paramiko.SSHClient) -> None:
        with self._lock:
            host_lock = self._host_locks.setdefault(host.name, threading.Lock())
        with host_lock:
            if self._clients.get(host.name) is client:
                del self._clients[host.name]
        client.close()

    def run(self, host: HostPlan, command: str, timeout: float, root: bool = False,
            stdin: bytes | None = None) -> CommandResult:
        """See ``SshRunner.run``."""
        if root and self._settings[host.name].become:
            command = "sudo -n sh -c " + shlex.quote(command)
        chan = self._started(host, command, timeout)
        if isinstance(chan, CommandResult):
            return chan
        # The channel itself, not SSHClient.exec_command's stdin file: closing (or collecting)
        # that file sends EOF from this thread while paramiko's own thread may be answering
        # the host's CLOSE, and an EOF that arrives after the CLOSE names a channel sshd has
        # freed: it then drops the whole connection ("ieof packet referred to nonexistent
        # channel"), failing every check running on it (seen in the lab). EOF is sent only
        # for input, which the command reads before it can exit; close() sends EOF and CLOSE
        # together, in order.
        try:
            if stdin:
                chan.sendall(stdin)
                chan.shutdown_write()
            out = chan.makefile("rb").read().decode("utf-8", "replace")
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
            status = chan.recv_exit_status()
        except TimeoutError:
            return CommandResult(-1, "", f"timed out after {timeout:g}s")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            return CommandResult(-1, "", f"SSH session error: {str(exc) or type(exc).__name__}")
        finally:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                chan.close()  # fails when the host has closed the connection already
        return CommandResult(status, out, err)

    def close(self) -> None:
        """See ``SshRunner.close``."""
        with self._lock:
            for got in self._clients.values():
                if isinstance(got, paramiko.SSHClient):
                    got.close()
            self._clients.clear()
