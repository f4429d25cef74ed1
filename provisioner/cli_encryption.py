"""``provisioner encryption-key rotate|status``: the Secrets encryption key, replaced safely.

Scope: thin typer commands over ``provisioner.rotation``. Each step that changes the hosts is
the os and control-plane phases of ``provision``: os records the cluster's identity (which
keys are its own) on every host, control-plane writes the keys and restarts the apiservers
one at a time, so the apiserver is served through the load balancer throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli_options import SpecFile, StateDir
from provisioner.cli_provision import _fail, err, out
from provisioner.execute import progress_for
from provisioner.plan import Plan
from provisioner.provision import ProvisionError, provision
from provisioner.rotation import RotationError, rotate_encryption_key, stage
from provisioner.state import cluster_dir

app = typer.Typer(help="The key that encrypts Secrets in etcd: rotate it, show its state.",
                  no_args_is_help=True)


def _plan(file: Path) -> Plan:
    from provisioner.cli import plan_or_exit  # the cli module imports this one

    return plan_or_exit(file)


@app.command("rotate")
def rotate(
    file: SpecFile,
    state_dir: StateDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every task of each step.")] = False,
) -> None:
    """Replace the encryption key: every apiserver learns the new key, then encrypts with it,
    every Secret is rewritten, and the old key is removed. Stopped anywhere (a failed step,
    Ctrl-C), it resumes where it stood when run again; no Secret is unreadable meanwhile."""
    from provisioner.verify.api import ApiClient, api_endpoints
    from provisioner.verify.transport import ClientCreds, TlsClient

    plan = _plan(file)
    sdir = cluster_dir(plan.name, state_dir)

    def converge(step: str) -> None:
        progress = progress_for(err, verbose=verbose)
        try:
            with progress:
                # os carries the recorded identity (every host), control-plane the keys.
                result = provision(file, ["os", "control-plane"], None, state_dir, False,
                                   progress)
        except ProvisionError as exc:
            raise RotationError(f"{step}: {exc}") from None
        if not result.succeeded:
            raise RotationError(f"{step}: {result.failure}; every Secret is still readable; "
                                "fix the cause and run the rotation again to resume")

    def api() -> ApiClient:
        pki = sdir / "pki"
        creds = ClientCreds(pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        return ApiClient(TlsClient(), api_endpoints(plan), creds, 30.0)

    try:
        result = rotate_encryption_key(plan, sdir, converge, api,
                                       lambda m: out.print(m, markup=False, highlight=False))
    except RotationError as exc:
        _fail(f"error: encryption-key rotation stopped at {exc}")
    for name, seconds in result.steps:
        out.print(f"  {seconds:6.1f}s  {name}", markup=False, highlight=False)
    out.print(f"encryption key rotated: Secrets are encrypted with {result.key_name}; "
              f"{result.rewritten} Secrets rewritten; the old key is gone from every host",
              markup=False, highlight=False)


@app.command("status")
def status(file: SpecFile, state_dir: StateDir = None) -> None:
    """The key's name and whether a rotation is under way (resume it with rotate)."""
    from provisioner.render.material import ENCRYPTION_KEY, read_encryption_key

    plan = _plan(file)
    secrets_dir = cluster_dir(plan.name, state_dir) / "secrets"
    if not (secrets_dir / ENCRYPTION_KEY).exists():
        _fail(f"no encryption key in {secrets_dir}: provision the cluster first")
    name = read_encryption_key(secrets_dir / ENCRYPTION_KEY).name
    where = stage(secrets_dir)
    out.print(f"encryption key {name}; rotation: "
              + ("none under way" if where == "idle" else f"{where} (run rotate to finish)"),
              markup=False, highlight=False)
