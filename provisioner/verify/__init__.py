"""``provisioner verify``: named health checks of a whole cluster, each ok/warn/fail/skipped
with evidence and a hint, as a table, JSON or JUnit.

Scope: the package's public API. ``verify`` runs the checks of ``CHECKS`` (or ``--only``
some) against a plan and its state directory; ``report`` renders the results.
"""

from provisioner.verify.model import Check, CheckResult, Outcome, Status, VerifyContext
from provisioner.verify.report import exit_code, summary_line, table, to_json, to_junit
from provisioner.verify.run import (
    CHECKS,
    UnknownCheckError,
    UnknownNodeError,
    build_context,
    check_names,
    failed,
    run_checks,
    select_checks,
    verify,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Outcome",
    "Status",
    "UnknownCheckError",
    "UnknownNodeError",
    "VerifyContext",
    "build_context",
    "check_names",
    "exit_code",
    "failed",
    "run_checks",
    "select_checks",
    "summary_line",
    "table",
    "to_json",
    "to_junit",
    "verify",
]
