"""Benchmark: machines up, cold provision to verified, no-op, drift repair, one more worker.

Usage (root, after ``make lab-artifacts lab-registry``; run by hand, never in tests)::

    .venv/bin/python bench/provision.py [--sizes 5,20] [--spec inventories/nspawn-3cp-2w.yaml]

For each size N it makes a cluster of 3 control-plane nodes and N-3 workers from the lab spec
(the lab's built programs and registry), on nspawn machines under a temporary state and
machine directory (the base image cache is shared), and times, in one run:

- ``up``: the machines up (and their SSH keys pinned);
- ``cold``: the first provision, every phase and ``verify`` (pods included);
- ``no-op``: a provision without ``verify`` on the converged cluster (after one that lets
  each host's probe cache the digests of its binaries), and ``no-op+verify`` with it;
- ``drift``: a provision after one managed file was edited by hand on one worker;
- ``+1 worker``: a provision of the spec with one more worker (its machine comes up first).

It prints a table (seconds, and the changed task count of each run) and purges the machines.
Only one lab may run at a time: the lab tests, this script and Vagrant share 192.168.56.0/24.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import yaml

from provisioner.execute import LineProgress
from provisioner.plan import build_plan
from provisioner.providers.nspawn import paths
from provisioner.providers.nspawn.provider import NspawnMachines
from provisioner.providers.ssh import cluster_ssh, ssh_run
from provisioner.provision import ProvisionResult, provision
from provisioner.spec.load import load_file

ROOT = Path(__file__).resolve().parents[1]
DRIFT_FILE = "/var/lib/kube-proxy/config.yaml"
SERIAL = False  # --serial: one phase at a time (provision --serial), to compare


def _spec(base: Path, name: str, workers: int) -> dict[str, Any]:
    """The lab spec renamed, with ``workers`` workers and every relative path absolute."""
    data: dict[str, Any] = yaml.safe_load(base.read_text())
    data["metadata"]["name"] = name
    spec = data["spec"]
    spec["workers"]["count"] = workers
    for reg in spec.get("registries", {}).get("private", []):
        for key in ("caFile", "passwordFile"):
            if key in reg:
                reg[key] = str((base.parent / reg[key]).resolve())
    if spec.get("artifacts", {}).get("path"):
        spec["artifacts"]["path"] = str((base.parent / spec["artifacts"]["path"]).resolve())
    return data


def _timed(log: IO[str], spec: Path, **kw: Any) -> tuple[float, ProvisionResult]:
    t0 = time.monotonic()
    result = provision(spec, None, kw.get("skip"), None, True, LineProgress(log),
                       parallel=not SERIAL)
    seconds = time.monotonic() - t0
    print(f"  {kw.get('label', 'run')}: {seconds:.1f}s, {result.changed} changed, steps "
          + ", ".join(f"{k} {v:.1f}" for k, v in result.steps.items()), flush=True)
    if not result.succeeded:
        raise SystemExit(f"{spec}: provision failed: {result.failure} (log above)")
    return seconds, result


def run_size(size: int, base_spec: Path, log: IO[str]) -> dict[str, str]:
    """One size's measurements, as table cells."""
    row: dict[str, str] = {"nodes": str(size)}
    with tempfile.TemporaryDirectory(prefix=f"bench-provision-{size}-") as tmp:
        os.environ["PROVISIONER_STATE_DIR"] = f"{tmp}/state"
        os.environ[paths.ENV_DATA_DIR] = f"{tmp}/data"
        os.environ.setdefault(paths.ENV_IMAGE_DIR, str(paths.DEFAULT_DATA_DIR / "images"))
        name = f"bench{size}"
        spec = Path(tmp) / "cluster.yaml"
        spec.write_text(yaml.safe_dump(_spec(base_spec, name, size - 3), sort_keys=False))
        provider = NspawnMachines(load_file(spec), lambda m: print(m, file=log))
        try:
            t0 = time.monotonic()
            provider.up()
            row["up"] = f"{time.monotonic() - t0:.1f}"
            s, r = _timed(log, spec, label="cold")
            row["cold"] = f"{s:.1f} ({r.changed})"
            s, r = _timed(log, spec, skip=["verify"], label="first no-op")  # hashes binaries
            s, r = _timed(log, spec, skip=["verify"], label="no-op")
            row["no-op"] = f"{s:.1f} ({r.changed})"
            row["no-op steps"] = ", ".join(f"{k} {v:.1f}" for k, v in r.steps.items())
            s, r = _timed(log, spec, label="no-op+verify")
            row["no-op+verify"] = f"{s:.1f} ({r.changed})"
            workers = [h for h in build_plan(load_file(spec)).hosts
                       if h.machine.is_node and not h.machine.is_control_plane]
            target = workers[-1].machine
            proc = ssh_run(cluster_ssh(name), target.ssh_user, target.address,
                           target.ssh_port, f"echo '# edited by hand' >> {DRIFT_FILE}", 60)
            if proc.returncode != 0:
                raise SystemExit(f"{target.name}: could not edit {DRIFT_FILE}: {proc.stderr}")
            s, r = _timed(log, spec, skip=["verify"], label="drift")
            row["drift"] = f"{s:.1f} ({r.changed})"
            spec.write_text(yaml.safe_dump(_spec(base_spec, name, size - 2), sort_keys=False))
            provider = NspawnMachines(load_file(spec), lambda m: print(m, file=log))
            s, r = _timed(log, spec, label="+1 worker")
            row["+1 worker"] = f"{s:.1f} ({r.changed})"
        finally:
            provider.down(purge=True)
    return row


def main() -> None:
    """Print one table row per size."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5,20", help="comma-separated node counts (>= 4)")
    ap.add_argument("--spec", default=str(ROOT / "inventories" / "nspawn-3cp-2w.yaml"))
    ap.add_argument("--log", default="/tmp/bench-provision.log",
                    help="where the runs' progress lines go")
    ap.add_argument("--serial", action="store_true",
                    help="run one phase at a time (provision --serial), to compare")
    args = ap.parse_args()
    global SERIAL
    SERIAL = args.serial
    sizes = [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0 or any(s < 4 for s in sizes):
        raise SystemExit("run as root, with sizes of at least 4 nodes")
    cols = ["nodes", "up", "cold", "no-op", "no-op+verify", "drift", "+1 worker"]
    print("seconds (changed tasks); cold and +1 worker include verify; progress in " + args.log)
    print("  ".join(f"{c:>14}" for c in cols))
    with open(args.log, "a", encoding="utf-8") as log:
        for size in sizes:
            row = run_size(size, Path(args.spec).resolve(), log)
            print("  ".join(f"{row.get(c, '-'):>14}" for c in cols))
            print(f"{'':>14}  no-op steps (s): {row.get('no-op steps', '-')}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
