"""Benchmark: adding one worker to a running cluster, and removing it again, several times.

Usage (root, after ``make lab-artifacts lab-registry``; run by hand, never in tests)::

    .venv/bin/python -m bench.scale_out [--size 20] [--rounds 2] [--spec FILE]

from the repository's top directory (it borrows ``bench/provision.py``'s spec writer).

It makes one cluster of 3 control-plane nodes and ``size - 3`` workers from the lab spec
(the lab's built programs and registry) on nspawn machines under a temporary state and
machine directory, provisions it once (to verified), then ``rounds`` times:

- ``+1 worker``: the spec gets one more worker and is provisioned (its machine comes up
  first, every step as a user runs it, ``verify`` included); the time of each step
  (machines, survey, phases, verify) and the changed tasks per host are printed;
- ``-1 worker``: the spec goes back and ``provision --prune`` drains, deletes and resets the
  extra worker.

``bench/provision.py`` measures the other runs (cold, no-op, drift) at several sizes; this one
repeats the scale-out on one cluster so that a change to it can be measured in minutes, not
in a cold provision per sample. The machines are purged at the end.
Only one lab may run at a time: the lab tests, the benchmarks and Vagrant share
192.168.56.0/24.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import yaml

from bench import idle_cpu
from bench.provision import _spec
from provisioner.execute import LineProgress
from provisioner.plan import build_plan
from provisioner.providers.nspawn import paths
from provisioner.providers.nspawn.provider import NspawnMachines
from provisioner.provision import ProvisionResult, provision
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir
from provisioner.verify import CheckResult, summary_line, verify

ROOT = Path(__file__).resolve().parents[1]


def _slowest_checks(results: Sequence[CheckResult], n: int) -> str:
    """``name/target seconds`` of the ``n`` slowest checks, slowest first."""
    late = sorted(results, key=lambda c: -c.seconds)[:n]
    return "; ".join(f"{c.name}/{c.target} {c.seconds:.1f}" for c in late)


def _timed(log: IO[str], spec: Path, label: str, skip: list[str] | None = None,
           prune: bool = False) -> tuple[float, ProvisionResult]:
    t0 = time.monotonic()
    result = provision(spec, None, skip, None, True, LineProgress(log), prune=prune)
    seconds = time.monotonic() - t0
    changed = {h: r.changed for h, r in result.host_totals().items() if r.changed}
    print(f"  {label}: {seconds:.1f}s, {result.changed} changed; steps "
          + ", ".join(f"{k} {v:.1f}" for k, v in result.steps.items())
          + "; phases " + ", ".join(f"{p.phase} {p.seconds:.1f}" for p in result.phases)
          + f"; changed per host {changed}", flush=True)
    print("    slowest: " + "; ".join(f"{t.phase}/{t.host} {t.task} {t.seconds:.1f}"
                                      for t in result.slowest(8)), flush=True)
    if result.verify:
        print("    slowest checks: " + _slowest_checks(result.verify, 6), flush=True)
    if not result.succeeded:
        raise SystemExit(f"{spec}: provision failed: {result.failure} (log: {log.name})")
    return seconds, result


def _verify_ab(spec: Path, added: str, rounds: int) -> None:
    """verify of the same cluster, ``rounds`` times each way: the probe from every node and
    from ``added`` alone, alternating so that the machine's drift hits both alike."""
    plan = build_plan(load_file(spec))
    sdir = cluster_dir(plan.name)
    times: dict[str, list[float]] = {"every node": [], added: []}
    for _ in range(rounds):
        for label, scope in (("every node", None), (added, [added])):
            t0 = time.monotonic()
            results = verify(plan, sdir, probe_nodes=scope)
            times[label].append(time.monotonic() - t0)
            print(f"  verify, probe from {label}: {times[label][-1]:.1f}s, "
                  f"{summary_line(results)}; slowest {_slowest_checks(results, 3)}",
                  flush=True)
    print("  verify " + "; ".join(f"from {k}: " + ", ".join(f"{s:.1f}" for s in v) + " s"
                                   for k, v in times.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20, help="nodes before the scale-out (>= 4)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--spec", default=str(ROOT / "inventories" / "nspawn-3cp-2w.yaml"))
    ap.add_argument("--verify-ab", type=int, default=0, metavar="N",
                    help="after the first +1 worker, time verify N times each way, "
                    "alternating: probing from every node, and from the added node only "
                    "(what provision does after a scale-out)")
    ap.add_argument("--idle-cpu", type=float, default=0, metavar="S",
                    help="after the first provision, sample for S seconds how much CPU "
                    "the idle cluster uses, by program (bench/idle_cpu.py)")
    ap.add_argument("--log", default="/tmp/bench-scale-out.log",
                    help="where the runs' progress lines go")
    args = ap.parse_args()
    if os.geteuid() != 0 or args.size < 4:
        raise SystemExit("run as root, with a size of at least 4 nodes")
    base = Path(args.spec).resolve()
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{args.size}-") as tmp, \
            open(args.log, "a", encoding="utf-8") as log:
        os.environ["PROVISIONER_STATE_DIR"] = f"{tmp}/state"
        os.environ[paths.ENV_DATA_DIR] = f"{tmp}/data"
        os.environ.setdefault(paths.ENV_IMAGE_DIR, str(paths.DEFAULT_DATA_DIR / "images"))
        name = f"scale{args.size}"
        spec = Path(tmp) / "cluster.yaml"

        def write(workers: int) -> None:
            spec.write_text(yaml.safe_dump(_spec(base, name, workers), sort_keys=False))

        write(args.size - 3)
        provider = NspawnMachines(load_file(spec), lambda m: print(m, file=log))
        try:
            t0 = time.monotonic()
            provider.up()
            print(f"{args.size} machines up: {time.monotonic() - t0:.1f}s", flush=True)
            _timed(log, spec, "cold")
            if args.idle_cpu:
                print(idle_cpu.sample(args.idle_cpu), flush=True)
            _timed(log, spec, "no-op", skip=["verify"])
            adds, removes = [], []
            for n in range(1, args.rounds + 1):
                print(f"round {n}:", flush=True)
                write(args.size - 2)
                provider = NspawnMachines(load_file(spec), lambda m: print(m, file=log))
                adds.append(_timed(log, spec, "+1 worker")[0])
                if n == 1 and args.verify_ab:
                    _verify_ab(spec, f"{name}-w{args.size - 2}", args.verify_ab)
                write(args.size - 3)
                removes.append(_timed(log, spec, "-1 worker (--prune)", prune=True)[0])
            print(f"+1 worker to {args.size} nodes: " + ", ".join(f"{s:.1f}" for s in adds)
                  + " s; -1 worker: " + ", ".join(f"{s:.1f}" for s in removes) + " s")
        finally:
            write(args.size - 2)
            NspawnMachines(load_file(spec), lambda m: print(m, file=log)).down(purge=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
