"""The command line: thin typer commands that hand off to plain functions.

Every command that takes a spec validates it first and exits 1 with the field-level report
before anything else happens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from provisioner import __version__
from provisioner.cli_artifacts import app as artifacts_app
from provisioner.cli_certs import app as certs_app
from provisioner.cli_encryption import app as encryption_app
from provisioner.cli_etcd import app as etcd_app
from provisioner.cli_machines import app as machines_app
from provisioner.cli_nodes import app as nodes_app
from provisioner.cli_options import SpecFile, StateDir, split_list
from provisioner.cli_provision import app as provision_app
from provisioner.cli_reset import app as reset_app
from provisioner.cli_upgrade import app as upgrade_app
from provisioner.cli_vagrant import app as vagrant_app
from provisioner.cli_verify import app as verify_app
from provisioner.cli_verify import smoke_app
from provisioner.plan import PhaseSelectionError, Plan, build_plan, select_phases
from provisioner.plan.show import plan_json, plan_text
from provisioner.spec import Cluster, SpecError, load_file
from provisioner.spec import files as spec_files
from provisioner.spec.errors import SHOWN_ISSUES
from provisioner.spec.example import EXAMPLE
from provisioner.spec.models import Cluster as ClusterModel
from provisioner.state import cluster_dir
from provisioner.versions import manifest

app = typer.Typer(
    help="Declarative Kubernetes cluster provisioning: validate, plan, render, converge, verify.",
    no_args_is_help=True,
    add_completion=False,
)


def load_or_exit(path: Path, require_files: bool = False) -> Cluster:
    """Load a spec or print every problem (one screen of them) and exit 1."""
    try:
        return load_file(path, require_files=require_files)
    except SpecError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def plan_or_exit(path: Path) -> Plan:
    """Load and plan a spec, exiting 1 on a bad spec."""
    return build_plan(load_or_exit(path))


@app.command()
def validate(
    file: SpecFile,
    allow_missing_files: Annotated[bool, typer.Option(
        "--allow-missing-files", help="Report local files the spec names that do not exist "
        "(caFile, passwordFile, SSH keys, artifacts.path) as notes and exit 0: for a spec "
        "checked before its files are made, e.g. by `make lab-artifacts lab-registry` or "
        "`provisioner artifacts build`. Files that exist are checked either way.")] = False,
) -> None:
    """Check a spec and the files it names; exit 0 when valid, 1 listing every problem.

    A local file the spec names that does not exist is a problem (shown with its resolved
    path), as `provision` finds it; --allow-missing-files makes it a note.
    """
    try:
        cluster = load_file(file, require_files=not allow_missing_files)
    except SpecError as exc:
        typer.echo(str(exc), err=True)
        missing = sum(isinstance(i, spec_files.MissingFile) for i in exc.issues)
        if missing:
            typer.echo(f"note: {_files_missing(missing)}; for a spec checked before its files "
                       "are made, --allow-missing-files lists such files as notes", err=True)
        raise typer.Exit(1) from None
    notes = spec_files.check(cluster, file.resolve().parent)[1] if allow_missing_files else []
    for issue in notes[:SHOWN_ISSUES]:
        typer.echo(f"note: {issue}", err=True)
    typer.echo(f"{file}: valid (cluster {cluster.metadata.name}, "
               f"Kubernetes {cluster.spec.kubernetes_version})"
               + (f"; {_files_missing(len(notes))} yet (see the notes)" if notes else ""))


def _files_missing(count: int) -> str:
    return (f"{count} file the spec names does not exist" if count == 1
            else f"{count} files the spec names do not exist")


@app.command()
def plan(
    file: SpecFile,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    only: Annotated[list[str] | None, typer.Option(help="Show only these phases.")] = None,
    skip: Annotated[list[str] | None, typer.Option(help="Leave out these phases.")] = None,
    diff: Annotated[bool, typer.Option(
        "--diff", help="Compare every host with the plan and show, per host, the files, "
        "binaries and services a provision would change (unified diffs for text files; "
        "secrets only as changed) and the restarts that would follow. Changes nothing. "
        "Exit 0: no changes; 2: changes; 1: error.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Show hosts and roles, components, PKI, artifacts and the ordered phases."""
    if diff:
        _plan_diff(file, split_list(only), split_list(skip), state_dir, as_json)
        return
    p = plan_or_exit(file)
    try:
        selected = select_phases(p, split_list(only), split_list(skip))
    except PhaseSelectionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(plan_json(p))
        return
    sys.stdout.write(plan_text(p))
    if only or skip:
        typer.echo("\nSelected: " + ", ".join(ph.name for ph in selected))


def _plan_diff(file: Path, only: list[str] | None, skip: list[str] | None,
               state_dir: Path | None, as_json: bool) -> None:
    from provisioner.provision import ProvisionError, plan_diff

    load_or_exit(file, require_files=True)
    try:
        result = plan_diff(file, only, skip, state_dir)
    except ProvisionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    sys.stdout.write(result.json if as_json else result.text)
    raise typer.Exit(2 if result.changed_hosts else 0)


@app.command()
def render(
    file: SpecFile,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    state_dir: StateDir = None,
) -> None:
    """Render every host's files and the ansible-runner inputs into --out."""
    from provisioner.render.material import MaterialError, prepare, write_admin_kubeconfig
    from provisioner.render.tree import render as render_tree
    from provisioner.render.tree import write_tree

    p = plan_or_exit(file)
    sdir = cluster_dir(p.name, state_dir)
    try:
        material, report = prepare(p, sdir, file.resolve().parent)
        tree = render_tree(p, material, _default_key(p, sdir))
        admin = write_admin_kubeconfig(p, material, sdir)
    except MaterialError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    write_tree(tree, out)
    files = sum(len(f) for f in tree.hosts.values())
    typer.echo(f"rendered {files} files for {len(tree.hosts)} hosts into {out} "
               f"(PKI: {len(report.created)} created, {len(report.reissued)} reissued, "
               f"{len(report.kept)} kept in {sdir / 'pki'}); admin kubeconfig: {admin}")


def _default_key(p: Plan, sdir: Path) -> Path | None:
    """Providers that make machines keep their SSH key in the state directory."""
    if p.cluster.spec.provider.type == "static":
        return None
    return sdir / "ssh" / "id_ed25519"


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example.")] = Path(
        "cluster.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example spec."""
    if path.exists() and not force:
        typer.echo(f"{path} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(1)
    path.write_text(EXAMPLE)
    typer.echo(f"wrote {path}; next: provisioner validate {path}")


@app.command()
def schema() -> None:
    """Print the spec's JSON schema (every field with its description and default)."""
    typer.echo(json.dumps(ClusterModel.model_json_schema(by_alias=True), indent=2))


@app.command()
def versions() -> None:
    """List supported Kubernetes versions and the component versions each pins."""
    for minor, rel in manifest.minors().items():
        typer.echo(f"{minor}: {', '.join(rel.patches)} (default {rel.default})")
        comps = ", ".join(f"{k} {v}" for k, v in sorted(rel.components.items()))
        typer.echo(f"  {comps}")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


app.add_typer(machines_app, name="machines", help="A spec's nspawn nodes or Vagrant VMs.")
app.add_typer(artifacts_app, name="artifacts", help="Download, verify and bundle binaries.")
app.add_typer(vagrant_app, name="vagrant")
app.add_typer(encryption_app, name="encryption-key")
app.add_typer(etcd_app, name="etcd")
app.add_typer(certs_app, name="certs")
app.add_typer(nodes_app, name="node", help="Take worker nodes out of the cluster.")
# provision and status are top-level commands defined beside the provision flow.
app.registered_commands += provision_app.registered_commands
app.registered_commands += reset_app.registered_commands
app.registered_commands += verify_app.registered_commands
app.registered_commands += smoke_app.registered_commands
app.registered_commands += upgrade_app.registered_commands


def main() -> None:
    """Console-script entry point."""
    app()
