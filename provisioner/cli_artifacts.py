"""``provisioner artifacts``: build, fetch or bundle a spec's artifacts.

Scope: thin typer commands over ``provisioner.artifacts``. The cache lives under the state
root (``<state>/cache/artifacts``) and is shared by every cluster. Errors (a bad spec, a
download or verification failure) print one clear message to stderr and exit 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from provisioner.artifacts import ArtifactError, FetchedArtifact, fetch, write_bundle
from provisioner.artifacts.manifest import default_manifest
from provisioner.build.build import build as build_artifacts
from provisioner.build.build import build_images
from provisioner.build.build import cache_root as build_cache_root
from provisioner.build.recipes import RecipeError
from provisioner.cli_options import SpecFile
from provisioner.plan import Plan, build_plan
from provisioner.spec import SpecError, load_file
from provisioner.state import private_dir, state_root

app = typer.Typer(
    help="Release binaries and packages: build them from source, fetch them to the "
    "controller, or bundle them.",
    no_args_is_help=True,
)
# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating paths.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def cache_root() -> Path:
    """The controller's artifact cache, shared by all clusters."""
    private_dir(state_root())
    return private_dir(state_root() / "cache") / "artifacts"


def _fail(message: str) -> NoReturn:
    # soft_wrap: an error names URLs and paths; hard wrapping would break them for copying.
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _plan(file: Path) -> Plan:
    try:
        return build_plan(load_file(file))
    except SpecError as exc:
        _fail(str(exc))


def _fetch(file: Path, plan: Plan) -> dict[str, FetchedArtifact]:
    try:
        return fetch(plan, cache_root(), file.resolve().parent)
    except ArtifactError as exc:
        _fail(f"error: {exc}")


def _table(plan: Plan, fetched: dict[str, FetchedArtifact]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False)
    for col in ("ARTIFACT", "VERSION", "KIND", "SHA256", "FILE"):
        table.add_column(col, no_wrap=True)
    manifest = default_manifest()
    for name, fa in fetched.items():
        version = fa.version
        if name in manifest.entries:
            pinned = manifest.pinned_version(name, plan)
            if pinned != fa.version:
                # A local source may carry other versions (e.g. Debian's): say so, do not hide it.
                version = f"{fa.version} (pinned {pinned})"
        table.add_row(name, version, fa.kind, fa.sha256[:16], str(fa.path))
    return table


@app.command("fetch")
def fetch_cmd(file: SpecFile) -> None:
    """Download (or read) and verify every artifact the spec's hosts need."""
    plan = _plan(file)
    started = time.monotonic()
    fetched = _fetch(file, plan)
    out.print(_table(plan, fetched))
    out.print(f"{len(fetched)} artifacts verified ({plan.cluster.spec.artifacts.source} source) "
              f"in {time.monotonic() - started:.1f}s", markup=False, highlight=False)


@app.command()
def bundle(
    file: SpecFile,
    output: Annotated[
        Path,
        typer.Option("--out", help="Bundle tar to write; use it as artifacts.path with "
                     "source local, or extract it into a web root for source mirror.",
                     show_default=False),
    ],
) -> None:
    """Fetch every artifact the spec needs and write them into one tar with manifest.json."""
    plan = _plan(file)
    fetched = _fetch(file, plan)
    try:
        write_bundle(fetched, output)
    except OSError as exc:
        _fail(f"error: cannot write {output}: {exc}")
    out.print(_table(plan, fetched))
    size = output.stat().st_size / 2**20
    out.print(f"wrote {output} ({size:.1f} MiB, {len(fetched)} artifacts)", markup=False,
              highlight=False)


class _BuildView:
    """A live table of what is being built (rich), or one line per state change when piped."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, float]] = {}
        self.started: dict[str, float] = {}
        self.live: Live | None = None

    def __call__(self, label: str, state: str, detail: str) -> None:
        now = time.monotonic()
        self.started.setdefault(label, now)
        old = self.rows.get(label)
        self.rows[label] = (state, detail, now - self.started[label])
        if self.live is not None:
            self.live.update(self._table())
        elif old is None or old[0] != state:
            out.print(f"{label}: {state} {detail}".rstrip(), markup=False, highlight=False)

    def _table(self) -> Table:
        table = Table(box=box.SIMPLE, show_edge=False)
        for col in ("RECIPE", "STATE", "TIME", "DETAIL"):
            table.add_column(col, no_wrap=True)
        for label, (state, detail, secs) in self.rows.items():
            table.add_row(label, state, f"{secs:.0f}s", detail[:90])
        return table


@app.command("build")
def build_cmd(
    file: SpecFile,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Directory to write the local artifact source into "
                     "(default: the spec's artifacts.path when its source is local).",
                     show_default=False),
    ] = None,
) -> None:
    """Build every binary artifact the spec's release pins from upstream source (Go module
    proxy) into a local artifact source, and the cluster's images (OCI layouts in images/);
    finished builds are cached per version."""
    plan = _plan(file)
    target = output
    spec_art = plan.cluster.spec.artifacts
    if target is None:
        if spec_art.source != "local" or spec_art.path is None:
            _fail("error: --out is required unless the spec has artifacts.source: local with "
                  "artifacts.path (the directory the build writes)")
        target = spec_art.path if spec_art.path.is_absolute() else (
            file.resolve().parent / spec_art.path).resolve()
    started = time.monotonic()
    view = _BuildView()
    try:
        if sys.stdout.isatty():
            with Live(view._table(), console=out, refresh_per_second=4) as live:
                view.live = live
                built = build_artifacts(plan, target, view)
                images = build_images(plan, target, view)
        else:
            built = build_artifacts(plan, target, view)
            images = build_images(plan, target, view)
    except (ArtifactError, RecipeError) as exc:
        _fail(f"error: {exc}")
    out.print(_table(plan, built))
    out.print(f"{len(images)} images: {', '.join(images)}", markup=False, highlight=False)
    out.print(f"{len(built)} artifacts in {target} (local source) in "
              f"{time.monotonic() - started:.1f}s; build cache {build_cache_root()}",
              markup=False, highlight=False)
