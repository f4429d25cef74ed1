"""Benchmark: spec -> plan -> rendered tree for 5, 50 and 1,000 nodes (run by hand).

Usage: ``python bench/render.py [--repeat N]``. The PKI for each size is generated once
before timing (certificate generation is a one-time cost kept in the state directory);
the timed part is what every run repeats: load + validate, plan, render.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from provisioner.plan import build_plan
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import parse

SPEC = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {{name: bench}}
spec:
  kubernetesVersion: "1.37.2"
  provider: {{type: nspawn, subnet: 10.0.0.0/16}}
  controlPlane: {{count: 3}}
  workers: {{count: {workers}}}
  network: {{podCIDR: 10.128.0.0/10, serviceCIDR: 10.96.0.0/12, nodeCIDRMaskSize: 24}}
"""


def run(nodes: int, repeat: int) -> tuple[float, float, int]:
    """Median and best seconds for ``nodes`` nodes, and the number of files rendered."""
    text = SPEC.format(workers=nodes - 3)
    with tempfile.TemporaryDirectory() as tmp:
        plan = build_plan(parse(text))
        t0 = time.perf_counter()
        material, _ = prepare(plan, Path(tmp), Path(tmp))
        pki_s = time.perf_counter() - t0
        times = []
        files = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            plan = build_plan(parse(text))
            tree = render(plan, material, Path("/key"))
            times.append(time.perf_counter() - t0)
            files = sum(len(v) for v in tree.hosts.values())
        print(f"  (one-time PKI for {nodes} nodes: {pki_s:.2f} s)")
        return statistics.median(times), min(times), files


def main() -> None:
    """Print a table of timings."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'nodes':>6} {'files':>7} {'median s':>9} {'best s':>8}")
    for n in (5, 50, 1000):
        med, best, files = run(n, args.repeat)
        print(f"{n:>6} {files:>7} {med:>9.3f} {best:>8.3f}")


if __name__ == "__main__":
    main()
