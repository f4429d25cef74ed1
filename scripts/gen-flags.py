#!/usr/bin/env python3
"""Write provisioner/versions/flags/ from the real binaries' `--help`.

Usage: python scripts/gen-flags.py [MINOR ...]   (default: every supported minor)

For each supported Kubernetes minor it builds (or reuses from the build cache) the
kubernetes recipe at the minor's default patch and the etcd recipe at the minor's etcd pin,
runs `<program> --help`, and writes one flag name per line to
`flags/v<minor>/<component>.txt` and `flags/etcd/<etcd-minor>.txt`, with a header naming
the binary's version. Flags that pflag hides (deprecated ones) are not in `--help` and so
are not listed: the renderer never uses them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provisioner.build.build import build_recipe, cache_root  # noqa: E402
from provisioner.build.recipes import recipe  # noqa: E402
from provisioner.versions.flags import COMPONENTS  # noqa: E402
from provisioner.versions.manifest import minors  # noqa: E402

FLAGS = ROOT / "provisioner" / "versions" / "flags"
# `      --advertise-address ip   ...`, `  -v, --v Level ...`, etcd's `  --name 'default'`.
_FLAG = re.compile(r"^\s{1,12}(?:-[A-Za-z0-9], )?--([A-Za-z0-9][A-Za-z0-9_.-]*)")


def parse_help(text: str) -> list[str]:
    """Flag names in a `--help` text, sorted, without duplicates."""
    return sorted({m.group(1) for line in text.splitlines() if (m := _FLAG.match(line))})


def _help(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.stdout + proc.stderr


def _version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


def _write(path: Path, names: list[str], header: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {h}" for h in header] + names
    path.write_text("\n".join(lines) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(names)} flags")


def _report(label: str, state: str, detail: str) -> None:
    if state in ("cached", "done", "failed"):
        print(f"{label}: {state} {detail}", file=sys.stderr)


def main(argv: list[str]) -> int:
    wanted = argv or sorted(minors())
    etcd_done: set[str] = set()
    for minor in wanted:
        rel = minors()[minor]
        built = build_recipe(recipe("kubernetes"), rel.default, cache_root(), _report)
        for comp in COMPONENTS:
            if comp == "etcd":
                continue
            binary = built.program(comp)
            _write(FLAGS / f"v{minor}" / f"{comp}.txt", parse_help(_help(binary)), [
                f"source: `{comp} --help` of the binary built from k8s.io/kubernetes "
                f"v{rel.default} (scripts/gen-flags.py)",
                f"version: {_version(binary)}",
            ])
        etcd_version = rel.component("etcd")
        etcd_minor = ".".join(etcd_version.split(".")[:2])
        if etcd_minor in etcd_done:
            continue
        etcd_done.add(etcd_minor)
        eb = build_recipe(recipe("etcd"), etcd_version, cache_root(), _report)
        _write(FLAGS / "etcd" / f"{etcd_minor}.txt", parse_help(_help(eb.program("etcd"))), [
            f"source: `etcd --help` of the binary built from go.etcd.io/etcd/server/v3 "
            f"v{etcd_version} (scripts/gen-flags.py)",
            f"version: {_version(eb.program('etcd')).replace(chr(10), ' ')}",
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
