"""``provisioner upgrade FILE --to V``: move a cluster to another Kubernetes release.

Scope: a thin typer command over ``provisioner.provision``. The spec stays the one source of
truth: the command checks the step against the release the spec names (one minor at a
time, never down, a supported release), shows what the release pins change, writes the new
``kubernetesVersion`` into the file (every other byte kept) and provisions it, which
surveys the hosts, refuses a path the hosts cannot take before any host is touched, takes
an etcd snapshot and rolls the cluster out (etcd member by member, the control plane one
node at a time, the other nodes ``--max-unavailable`` at a time). A refusal before any host
changed puts the file back as it was; a rollout that stopped keeps the new version, so the
next ``provision`` (or this command again) resumes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli_options import SpecFile, StateDir
from provisioner.cli_provision import _fail, err, out, report
from provisioner.execute import progress_for
from provisioner.membership import DEFAULT_DRAIN_TIMEOUT
from provisioner.provision import ProvisionError, provision

app = typer.Typer()


def _changes(current: str, target: str) -> list[str]:
    """The component pins that move with the release, ``name old -> new``."""
    from provisioner.versions import manifest

    old, new = manifest.release_for(current), manifest.release_for(target)
    return [f"{name} {old.components.get(name, '-')} -> {value}"
            for name, value in new.components.items()
            if old.components.get(name) != value]


def _write(file: Path, text: str) -> None:
    """Replace the spec's text in one step, keeping its mode."""
    tmp = file.with_name(f".{file.name}.upgrade")
    tmp.write_text(text)
    os.chmod(tmp, file.stat().st_mode & 0o7777)
    os.replace(tmp, file)


@app.command("upgrade")
def upgrade_cmd(
    file: SpecFile,
    to: Annotated[str, typer.Option(
        "--to", metavar="VERSION", help="The Kubernetes release to go to (one minor above "
        "the spec's at most; `provisioner versions` lists the supported ones).",
        show_default=False)],
    max_unavailable: Annotated[int, typer.Option(
        "--max-unavailable", min=1, help="How many nodes are drained and upgraded at a "
        "time (the control plane's own services always go one node at a time).")] = 1,
    drain_timeout: Annotated[int, typer.Option(
        "--drain-timeout", min=10, help="Seconds one node's drain may take before the "
        "rollout stops (the node stays cordoned).")] = DEFAULT_DRAIN_TIMEOUT,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    no_machines: Annotated[bool, typer.Option(
        "--no-machines", help="Do not bring the provider's machines up first.")] = False,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show every task's start and end on each host.")] = False,
) -> None:
    """Upgrade the cluster to another Kubernetes release: set spec.kubernetesVersion in FILE
    to VERSION and provision it as a rolling upgrade (preflight and etcd snapshot first)."""
    from provisioner.cli import load_or_exit
    from provisioner.plan import build_plan
    from provisioner.spec import SpecError, parse
    from provisioner.upgrade import path_to, retarget
    from provisioner.versions import manifest

    cluster = load_or_exit(file)
    current = build_plan(cluster).version
    target = to.strip().removeprefix("v")
    supported = manifest.supported_versions()
    if target not in supported:
        _fail(f"error: --to {to}: not a supported Kubernetes release; supported: "
              f"{', '.join(supported)} (`provisioner versions`); nothing was changed", 2)
    if target == current:
        _fail(f"error: {file} already names {current}; `provisioner provision {file}` "
              "converges the hosts to it; nothing was changed", 2)
    try:
        path = path_to(current, target)
    except ValueError as exc:
        _fail(f"error: --to {target}: {exc}; nothing was changed", 2)
    if len(path) > 1:
        _fail(f"error: --to {target} skips a minor release: Kubernetes upgrades one minor "
              f"at a time, and {file} names {current}; nothing was changed.\n"
              f"Fix: upgrade through {' -> '.join(path)}: `provisioner upgrade {file} --to "
              f"{path[0]}`, then to the next.", 2)
    original = file.read_text()
    try:
        text = retarget(original, target)
    except ValueError as exc:
        _fail(f"error: {file}: {exc}; nothing was changed", 2)
    try:
        parse(text, str(file), file.resolve().parent)
    except SpecError as exc:
        _fail(f"error: {exc}\nnothing was changed", 2)
    out.print(f"upgrade {cluster.metadata.name}: {current} -> {target}", markup=False,
              highlight=False)
    for line in _changes(current, target):
        out.print(f"  {line}", markup=False, highlight=False)
    out.print(f"  then: {file} names {target}; provision surveys the hosts, refuses a path "
              "they cannot take, takes an etcd snapshot and rolls the cluster out",
              markup=False, highlight=False)
    if not yes and not typer.confirm("Upgrade?", err=True):
        _fail("upgrade: not confirmed; nothing was changed")
    _write(file, text)
    human = out
    progress = progress_for(human, verbose=verbose)
    try:
        with progress:
            result = provision(file, None, None, state_dir, not no_machines, progress,
                               drain_timeout=drain_timeout, max_unavailable=max_unavailable)
    except ProvisionError as exc:
        _write(file, original)  # nothing ran: the spec names what the hosts run again
        _fail(f"error: {exc}\n{file} names {current} again.", exc.exit_code)
    except BaseException:
        print(f"{file} now names {target}; `provisioner provision {file}` resumes the "
              "upgrade", file=sys.stderr)
        raise
    if result.failure is not None:
        err.print(f"{file} now names {target}; fix the failure, then `provisioner provision "
                  f"{file}` resumes the upgrade", markup=False, highlight=False)
    report(result, human, progress)
