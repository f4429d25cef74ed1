#!/usr/bin/env python3
"""Time `provisioner artifacts build`: cold (empty cache) and warm, and check reproducibility.

Usage: python bench/build.py [SPEC] [--warm-only]

Cold uses a fresh PROVISIONER_CACHE_DIR (the Go module and build caches too, so modules are
downloaded again); warm runs twice more on that cache. The sha256 of every built file must be
the same in all runs (reproducible builds). Run by hand; the numbers go in the notes, never in
tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "provisioner"


def build(spec: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "PROVISIONER_CACHE_DIR": str(cache)}
    start = time.monotonic()
    subprocess.run([str(CLI), "artifacts", "build", str(spec), "--out", str(out)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def hashes(out: Path) -> dict[str, str]:
    data = json.loads((out / "manifest.json").read_text())
    images = json.loads((out / "images.json").read_text())
    return {**{k: v["sha256"] for k, v in data.items()},
            **{k: v["manifest"] for k, v in images.items()}}


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    spec = Path(args[0]) if args else ROOT / "inventories" / "nspawn-3cp-2w.yaml"
    warm_only = "--warm-only" in argv
    with tempfile.TemporaryDirectory(prefix="provisioner-bench-build-") as tmp:
        t = Path(tmp)
        cache = Path(os.environ.get("PROVISIONER_CACHE_DIR", Path.home() / ".cache/provisioner")) \
            if warm_only else t / "cache"
        rows = []
        results = []
        for i, label in enumerate(["warm", "warm"] if warm_only else ["cold", "warm", "warm"]):
            out = t / f"out{i}"
            rows.append((label, build(spec, out, cache)))
            results.append(hashes(out))
        same = all(r == results[0] for r in results)
    print(f"{'run':<6} {'seconds':>9}")
    for label, secs in rows:
        print(f"{label:<6} {secs:>9.1f}")
    print(f"{len(results[0])} files and images; identical sha256 in every run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
