"""Encryption-key rotation: a new key for Secrets at rest, and no Secret unreadable meanwhile.

Scope: the steps Kubernetes documents for rotating a decryption key behind several
apiservers ("Rotating a decryption key"), each recorded in the state directory's key files
(``provisioner.render.material``), so a run that stops anywhere is resumed by running the
command again:

1. stage: a new key is written as ``encryption-key.next``; the control-plane phase gives it
   to every apiserver, which can now decrypt with it while still encrypting with the old.
2. switch: the old key becomes ``.retired`` and the new one the write key; the control-plane
   phase restarts the apiservers one at a time, and from then on they encrypt with it.
3. rewrite: every Secret is read and replaced through the API; the apiserver stores an
   object it read with a key other than the write key again, under the write key.
4. retire: ``.retired`` is removed and the control-plane phase takes the old key off every
   host.

The cluster's recorded identity accepts either key while both are readable
(``provisioner.pki.identity``), so the rotation needs no ``--replace-identity``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from provisioner.plan.model import Plan
from provisioner.render.material import (
    ENCRYPTION_KEY,
    NEXT_KEY,
    RETIRED_KEY,
    new_encryption_key,
    read_encryption_key,
)
from provisioner.state import write_private
from provisioner.verify.api import ApiClient, ApiError, ApiUnavailable

SECRETS_PAGE = 250


class RotationError(Exception):
    """A step failed; the message names it, and the rotation resumes when run again."""


@dataclass
class RotationResult:
    """What a rotation did: the steps with their seconds, Secrets rewritten, the new key."""

    key_name: str = ""
    steps: list[tuple[str, float]] = field(default_factory=list)
    rewritten: int = 0


def stage(secrets_dir: Path) -> str:
    """Where a rotation stands: ``idle``, ``staged`` (step 1 done or under way) or
    ``switched`` (the new key writes; old Secrets may still need rewriting)."""
    if (secrets_dir / NEXT_KEY).exists():
        return "staged"
    if (secrets_dir / RETIRED_KEY).exists():
        return "switched"
    return "idle"


def _next_name(secrets_dir: Path) -> str:
    """``key<N+1>`` for the highest ``key<N>`` in use (names are stored in etcd values)."""
    used = [read_encryption_key(secrets_dir / n).name
            for n in (ENCRYPTION_KEY, RETIRED_KEY) if (secrets_dir / n).exists()]
    numbers = [int(n[3:]) for n in used if n.startswith("key") and n[3:].isdigit()]
    return f"key{max(numbers, default=0) + 1}"


def stage_new_key(secrets_dir: Path) -> str:
    """Step 1's state change: write ``.next``; returns the new key's name."""
    name = _next_name(secrets_dir)
    write_private(secrets_dir / NEXT_KEY, new_encryption_key(name))
    return name


def switch_keys(secrets_dir: Path) -> None:
    """Step 2's state change: the write key is retired and the staged key writes. Each
    rename is atomic and no key file is ever deleted here, so every key stays on disk."""
    (secrets_dir / ENCRYPTION_KEY).replace(secrets_dir / RETIRED_KEY)
    (secrets_dir / NEXT_KEY).replace(secrets_dir / ENCRYPTION_KEY)


def rewrite_secrets(api: ApiClient, page: int = SECRETS_PAGE) -> int:
    """Replace every Secret with itself (step 3), a page at a time; returns how many were
    rewritten. A Secret deleted or changed since it was listed (404, 409) is skipped: a
    changed one was already written with the current key."""
    done = 0
    token = ""
    while True:
        path = f"/api/v1/secrets?limit={page}" + (f"&continue={quote(token)}" if token else "")
        listing = api.get_json(path)
        for item in listing.get("items", []):
            meta = item.get("metadata", {})
            target = f"/api/v1/namespaces/{meta['namespace']}/secrets/{meta['name']}"
            resp = api.request("PUT", target, {"apiVersion": "v1", "kind": "Secret", **item})
            if resp.status == 200:
                done += 1
            elif resp.status not in (404, 409):
                raise ApiError(resp.status, target, resp.body)
        token = listing.get("metadata", {}).get("continue") or ""
        if not token:
            return done


def rotate_encryption_key(plan: Plan, sdir: Path, converge: Callable[[str], None],
                          api: Callable[[], ApiClient],
                          note: Callable[[str], None]) -> RotationResult:
    """Run the remaining steps of a rotation (a new one if none is under way).
    ``converge(step)`` runs the control-plane phase and raises ``RotationError`` when it
    fails; ``api()`` gives a client with the admin credentials."""
    if not plan.cluster.spec.apiserver.encryption_at_rest:
        raise RotationError("spec.apiserver.encryptionAtRest is false: there is no key to "
                            "rotate; enable it (the default) and provision first")
    secrets_dir = sdir / "secrets"
    if not (secrets_dir / ENCRYPTION_KEY).exists():
        raise RotationError(f"no encryption key in {secrets_dir}: provision the cluster first")
    result = RotationResult()

    def step(name: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        note(f"rotation: {name}")
        action()
        result.steps.append((name, time.monotonic() - started))

    # A resumed rotation converges its current stage again first (a no-op where it
    # completed): a stage whose phase failed on one host must not be built upon.
    current = stage(secrets_dir)
    if current == "idle":
        result.key_name = stage_new_key(secrets_dir)
        step(f"stage {result.key_name}: every apiserver learns to decrypt with it",
             lambda: converge("stage"))
    elif current == "staged":
        step("stage (resumed)", lambda: converge("stage"))
    if current in ("idle", "staged"):
        switch_keys(secrets_dir)
        step("switch: the apiservers encrypt with the new key", lambda: converge("switch"))
    else:
        step("switch (resumed)", lambda: converge("switch"))
    result.key_name = read_encryption_key(secrets_dir / ENCRYPTION_KEY).name

    def rewrite() -> None:
        try:
            result.rewritten = rewrite_secrets(api())
        except (ApiError, ApiUnavailable) as exc:
            raise RotationError(f"rewrite: {exc}; every Secret is still readable (both keys "
                                "are on the apiservers); run the rotation again") from None

    step("rewrite every Secret with the new key", rewrite)
    (secrets_dir / RETIRED_KEY).unlink()
    step("retire the old key from every apiserver", lambda: converge("retire"))
    return result
