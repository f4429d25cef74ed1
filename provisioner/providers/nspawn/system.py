"""Small host helpers for the nspawn provider: running commands and checking processes.

Scope: subprocess wrappers that turn failures into ``ProviderError`` with the command's
output, and process checks that never trust a pid file alone (pids are reused; zombies
answer ``kill -0``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from provisioner.providers.base import ProviderError


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on failure raise ``ProviderError`` with stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise ProviderError(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"`{' '.join(argv)}` did not finish within {timeout}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-10:]
        raise ProviderError(
            f"`{' '.join(argv)}` failed with exit code {proc.returncode}:\n  " + "\n  ".join(detail)
        )
    return proc


def which(command: str) -> str | None:
    """Full path of ``command``, also looking in the sbin directories root normally has."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(command, path=path)


def read_pid(path: Path) -> int | None:
    """The pid stored in ``path``, or None when the file is missing or garbled."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """Arguments of a live process; empty for a dead process or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _reap(pid: int) -> None:
    # Our own children stay zombies until waited for; reap them so they read as dead.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """True when ``pid`` is a running (not zombie) process."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def owned(pid: int | None, *markers: str) -> bool:
    """True when ``pid`` is alive and its command line contains every marker.

    This is how the provider checks that a recorded pid still belongs to the process it
    started before signalling it.
    """
    if pid is None or not alive(pid):
        return False
    args = cmdline(pid)
    return all(any(m in a for a in args) for m in markers)


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``, ignoring a process that already went away."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
