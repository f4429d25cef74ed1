#!/usr/bin/env python3
"""Write the pinned Go module of a build recipe: go.mod, go.sum and source-date.

Usage: python scripts/update-recipes.py RECIPE VERSION [RECIPE VERSION ...]
       python scripts/update-recipes.py --all   (every recipe version kubernetes.yaml pins)

Reads the upstream go.mod of each root module through the Go module proxy, turns its local
replace directives into published versions (see provisioner.build.recipes.consumer_gomod),
runs `go mod tidy` and records the tag's time. Review the diff and commit it: the checked-in
go.sum is what pins every dependency of a build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provisioner.build.build import cache_root, pinned_recipe_versions  # noqa: E402
from provisioner.build.gotool import go_binary, go_env  # noqa: E402
from provisioner.build.recipes import consumer_gomod, recipe  # noqa: E402

RECIPES_DIR = ROOT / "provisioner" / "build" / "recipes"


def _download(mod: str, version: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([go_binary(), "mod", "download", "-json", f"{mod}@{version}"],
                         capture_output=True, text=True, env=env, cwd="/", check=False)
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or info.get("Error"):
        sys.exit(f"{mod}@{version}: {info.get('Error') or out.stderr.strip()}")
    return {k: str(v) for k, v in info.items()}


def update(name: str, version: str) -> Path:
    r = recipe(name)
    env = go_env(cache_root(), {"GOFLAGS": "-mod=mod -buildvcs=false"})
    upstream: dict[str, str] = {}
    date = ""
    for mod in r.modules:
        info = _download(mod, r.module_version(version), env)
        upstream[mod] = Path(info["GoMod"]).read_text()
        meta = json.loads(Path(info["Info"]).read_text())
        date = date or str(meta["Time"]).replace(".000Z", "Z")
    dest = RECIPES_DIR / name / version
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "go.mod").write_text(consumer_gomod(r, version, upstream))
    (dest / "go.sum").write_text("")
    tidy = subprocess.run([go_binary(), "mod", "tidy"], cwd=dest, env=env, text=True,
                          capture_output=True, check=False)
    if tidy.returncode != 0:
        sys.exit(f"{name} {version}: go mod tidy failed:\n{tidy.stderr}")
    (dest / "source-date").write_text(date + "\n")
    lines = len((dest / "go.sum").read_text().splitlines())
    print(f"{dest.relative_to(ROOT)}: {lines} go.sum lines, source date {date}")
    return dest


def main(argv: list[str]) -> int:
    if argv == ["--all"]:
        pairs = sorted(pinned_recipe_versions())
    elif argv and len(argv) % 2 == 0:
        pairs = list(zip(argv[::2], argv[1::2], strict=True))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for name, version in pairs:
        update(name, version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
