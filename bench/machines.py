"""Benchmark: nspawn machines up/second up/down/purge for a spec (run by hand, as root).

Usage: ``python bench/machines.py [SPEC] [--rounds N]`` (default the 3+2 example). Uses a
temporary state and machine directory but the shared base-image cache, so the first round
includes the image build only if no image is cached yet (reported).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from provisioner.providers.nspawn import image, paths
from provisioner.providers.registry import provider_for
from provisioner.spec import load_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Print up, second up, down and purge times per round."""
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(ROOT / "inventories/nspawn-3cp-2w.yaml"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-machines-") as tmp:
        os.environ["PROVISIONER_STATE_DIR"] = f"{tmp}/state"
        os.environ[paths.ENV_DATA_DIR] = f"{tmp}/data"
        # Share the base-image cache with real use: building it is a one-time cost.
        os.environ.setdefault(paths.ENV_IMAGE_DIR, str(paths.DEFAULT_DATA_DIR / "images"))
        cluster = load_file(Path(args.spec))
        nodes = len(cluster.spec.hosts) or "generated"
        print(f"spec {args.spec} ({nodes} hosts); image cached: "
              f"{image.is_ready(paths.base_image('bookworm'))}")
        print(f"{'round':>5} {'up s':>7} {'2nd up s':>9} {'down s':>7} {'purge s':>8}")
        for r in range(1, args.rounds + 1):
            provider = provider_for(cluster)
            t = [time.perf_counter()]
            try:
                provider.up()
                t.append(time.perf_counter())
                provider.up()
                t.append(time.perf_counter())
                provider.down()
                t.append(time.perf_counter())
            finally:
                provider.down(purge=True)
                t.append(time.perf_counter())
            d = [b - a for a, b in pairwise(t)]
            print(f"{r:>5} {d[0]:>7.1f} {d[1]:>9.2f} {d[2]:>7.2f} {d[3]:>8.2f}")


if __name__ == "__main__":
    main()
