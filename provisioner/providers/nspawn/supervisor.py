"""Per-node supervisor: what ``systemd-nspawn@.service`` would be on a systemd host.

Scope: a tiny detached process per node. It joins the node's cgroups, runs systemd-nspawn in
the foreground, starts it again when the node rebooted (nspawn exits with 133 after an in-node
``systemctl reboot``) and forwards SIGTERM so that a stop is an orderly poweroff. Standard
library only, because it starts once per node on every ``up``.

Usage: ``python -m provisioner.providers.nspawn.supervisor --node-dir DIR [--cgroups FILE]
[--daemon] -- systemd-nspawn ...``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REBOOT_EXIT_CODE = 133


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"=== {stamp} supervisor[{os.getpid()}]: {message}", flush=True)


def _write_pid(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def join_cgroups(cgroups_file: Path) -> None:
    """Move this process into every cgroup listed in ``cgroups_file`` (one per line)."""
    for line in cgroups_file.read_text().split():
        (Path(line) / "cgroup.procs").write_text(f"{os.getpid()}\n")


def supervise(node_dir: Path, command: list[str]) -> int:
    """Run ``command`` until it exits for another reason than a reboot; return its code."""
    stop = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    nspawn_pid = node_dir / "nspawn.pid"
    while True:
        _log("starting systemd-nspawn")
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        _write_pid(nspawn_pid, child.pid)
        if stop:  # a signal arrived while the child was being started
            child.send_signal(signal.SIGTERM)
        rc = child.wait()  # retried after signal handlers (PEP 475)
        nspawn_pid.unlink(missing_ok=True)
        _log(f"systemd-nspawn exited with {rc}")
        if stop or rc != REBOOT_EXIT_CODE:
            return 128 - rc if rc < 0 else rc  # a child killed by a signal: shell convention
        _log("node rebooted: starting it again")


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="supervisor")
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--cgroups", type=Path)
    parser.add_argument(
        "--daemon", action="store_true", help="fork; the parent records the child's pid and exits"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("no command after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if args.cgroups is not None:
        join_cgroups(args.cgroups)
    runner_pid = args.node_dir / "runner.pid"
    if args.daemon:
        pid = os.fork()
        if pid:
            _write_pid(runner_pid, pid)
            os._exit(0)
    else:
        _write_pid(runner_pid, os.getpid())
    try:
        return supervise(args.node_dir, command)
    finally:
        runner_pid.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
