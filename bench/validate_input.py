"""Measure `provisioner validate` on hostile and huge input: wall time and peak memory.

Each case is written to a temporary file and validated by the real CLI in its own process
(so the times include Python's start-up, as a user sees them); peak memory is that process's
maximum resident set. A last, in-process row parses the 5 MB spec with the size and weight
limits lifted, to show what the limits save.

    .venv/bin/python bench/validate_input.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "provisioner"]
HEAD = ("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: big}\nspec:\n"
        "  provider: {type: static}\n  ssh: {privateKeyFile: /keys/id}\n"
        "  network: {podCIDR: 172.16.0.0/12, serviceCIDR: 192.168.0.0/16, nodeCIDRMaskSize: 28}\n"
        "  hosts:\n")


def hosts_spec(size: int, bad: bool = False) -> bytes:
    """A static spec of about ``size`` bytes: one host per line (``bad``: invalid names)."""
    lines = [HEAD]
    total, i = len(HEAD), 0
    while total < size:
        name = f"Host_{i}" if bad else f"h{i}"
        address = f"10.{i // 65025 % 250}.{i // 255 % 255}.{i % 255 + 1}"
        line = f"    - {{name: {name}, address: {address}}}\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()


def laughs() -> bytes:
    text = "x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return (text + HEAD.replace("  hosts:\n", "  apiserver: {extraSANs: *i}\n")).encode()


CASES: dict[str, bytes] = {
    "5 MB spec (80k hosts)": hosts_spec(5 << 20),
    "0.95 MiB valid spec (16k hosts)": hosts_spec(int(0.95 * (1 << 20))),
    "0.95 MiB spec, every host invalid": hosts_spec(int(0.95 * (1 << 20)), bad=True),
    "billion laughs (9 x 9 aliases)": laughs(),
    "flow nesting, 500k '['": b"[" * 500_000,
    "100k-digit number": HEAD.encode() + b"    - {name: a, address: " + b"9" * 100_000 + b"}\n",
    "binary (1 MiB of random bytes)": os.urandom(1 << 20),
    "UTF-16 spec": HEAD.encode("utf-16"),
}


def run(data: bytes) -> tuple[float, float, int, str]:
    """(seconds, peak MiB, exit code, first output line) of validating ``data``."""
    with tempfile.NamedTemporaryFile(suffix=".yaml") as f:
        f.write(data)
        f.flush()
        started = time.perf_counter()
        # The specs name a key file that is not here: that is a note, not the error measured.
        proc = subprocess.Popen([*CLI, "validate", f.name, "--allow-missing-files"],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        assert proc.stdout is not None
        out = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.splitlines()
    return seconds, usage.ru_maxrss / 1024, proc.returncode, (lines[1:2] or lines[:1] or [""])[0]


def uncapped(data: bytes) -> float:
    """Seconds to parse ``data`` in this process with the input limits lifted."""
    from provisioner.spec import SpecError, load, parse

    saved = load.MAX_BYTES, load.MAX_WEIGHT
    load.MAX_BYTES, load.MAX_WEIGHT = 1 << 30, 1 << 30
    started = time.perf_counter()
    try:
        parse(data)
    except SpecError:
        pass
    finally:
        load.MAX_BYTES, load.MAX_WEIGHT = saved
    return time.perf_counter() - started


def main() -> None:
    """Print one row per case."""
    baseline = run(b"")
    print(f"python start-up + import + empty file: {baseline[0]:.2f}s, {baseline[1]:.0f} MiB")
    print(f"{'case':36} {'size':>9} {'time':>7} {'peak':>8} exit  answer")
    for name, data in CASES.items():
        seconds, peak, code, line = run(data)
        print(f"{name:36} {len(data) / 2**20:7.2f}Mi {seconds:6.2f}s {peak:6.0f}Mi  {code:>3}  "
              f"{line.strip()[:90]}")
    big = CASES["5 MB spec (80k hosts)"]
    print(f"in-process parse of the 5 MB spec with the limits lifted: {uncapped(big):.1f}s")


if __name__ == "__main__":
    main()
