"""Running the Go toolchain for builds: environment, caches, progress lines, readable errors.

Scope: one place that starts ``go``. Builds use the Go module and build caches under the
build cache root (outside any checkout), ``-mod=readonly`` against the checked-in go.sum,
``GOTOOLCHAIN=local`` (never a toolchain download), and the proxy from ``$GOPROXY``. When
the proxy refuses a module the error names the module and version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from provisioner.build.recipes import RecipeError

# `go: k8s.io/api@v0.37.2: reading https://proxy.golang.org/...: 404 Not Found`
_MODULE_AT = re.compile(r"(?P<mod>[A-Za-z0-9._~/-]+)@(?P<ver>v[0-9][A-Za-z0-9.+-]*)")
_REFUSED = ("404 Not Found", "410 Gone", "not available", "unknown revision", "invalid version",
            "no matching versions", "reading https://", "dial tcp", "connection refused",
            "missing go.sum entry", "verifying", "checksum mismatch")


def go_binary() -> str:
    """Path of ``go``, or RecipeError with the fix."""
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)),
        None)
    if found is None:
        raise RecipeError("the Go toolchain is not installed (no `go` on PATH). Fix: install "
                          "Go 1.26 or newer (`make deps` does on Debian)")
    return found


def go_version(go: str) -> str:
    """``go1.26.8``: the toolchain version, part of every recipe key."""
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False,
                         env=_base_env(Path("/nonexistent")))
    if out.returncode != 0 or not out.stdout.strip():
        raise RecipeError(f"`{go} env GOVERSION` failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _base_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CGO_"))}
    # The proxy setting is the user's (or the machine's); everything else is ours.
    for k in ("GOPROXY", "GONOPROXY", "GOPRIVATE", "GOSUMDB", "GONOSUMDB", "GOINSECURE"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update({
        "GOMODCACHE": str(cache / "go" / "mod"),
        "GOCACHE": str(cache / "go" / "build"),
        "GOPATH": str(cache / "go" / "path"),
        "GOFLAGS": "-mod=readonly -buildvcs=false",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
        "GOWORK": "off",
    })
    return env


def go_env(cache: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of every ``go`` command of a build."""
    env = _base_env(cache)
    env.update(extra)
    return env


def run_go(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    what: str,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run ``go args`` in ``cwd``; stream stderr lines to ``on_line``; RecipeError on failure."""
    proc = subprocess.Popen([go_binary(), *args], cwd=cwd, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = [*tail[-199:], line]
        if on_line is not None:
            on_line(line)
    rc = proc.wait()
    if rc != 0:
        raise RecipeError(explain_failure(what, tail))


def explain_failure(what: str, lines: Sequence[str]) -> str:
    """A failure message: the refused module@version when the proxy said no, else the tail."""
    for line in lines:
        if any(r in line for r in _REFUSED):
            m = _MODULE_AT.search(line)
            if m is not None:
                proxy = os.environ.get("GOPROXY") or "default"
                return (f"{what}: the Go module proxy did not serve {m['mod']} {m['ver']}: "
                        f"{line.strip()}. Fix: check GOPROXY ({proxy}) and that this version "
                        "is published; pick a served version in provisioner/versions/"
                        "kubernetes.yaml and regenerate the recipe")
    errors = [ln for ln in lines if ln.strip() and not ln.startswith(("go: downloading", "\t"))]
    shown = "\n  ".join((errors or list(lines))[-15:])
    return f"{what}: go build failed:\n  {shown}"
