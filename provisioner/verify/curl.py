"""HTTPS requests made on a host with its own curl (loopback-only endpoints, the local LB).

Scope: build the curl command line and map curl's exit codes to the same ``TransportError``
kinds the controller-side client raises, so checks treat both paths alike.
"""

from __future__ import annotations

import re
import shlex

from provisioner.plan.model import HostPlan
from provisioner.verify.model import VerifyContext
from provisioner.verify.transport import ErrorKind, HttpResponse, TransportError

_STATUS_MARK = "\n__provisioner_http_status__="

# curl exit codes (man curl, EXIT CODES) by the kind of problem they mean.
_CURL_KINDS: dict[int, ErrorKind] = {
    6: "unreachable", 7: "refused", 28: "timeout", 35: "tls", 51: "tls-verify",
    60: "tls-verify", 58: "credentials", 77: "credentials", 52: "protocol", 56: "protocol",
}


def curl_command(url: str, timeout: float, ca: str | None, cert: str | None,
                 key: str | None) -> str:
    """curl printing the body then the status; ``ca=None`` checks reachability only (-k)."""
    args = ["curl", "-sS", "--max-time", str(max(1, int(timeout))), "-o", "-",
            "-w", _STATUS_MARK + "%{http_code}"]
    args += ["--cacert", ca] if ca is not None else ["-k"]
    if cert is not None and key is not None:
        args += ["--cert", cert, "--key", key]
    return shlex.join([*args, url])


def _clean(stderr: str) -> str:
    # Durations in curl's messages would make repeated runs differ.
    text = " ".join(stderr.split())
    text = re.sub(r" after \d+ (ms|milliseconds)", "", text)
    return re.sub(r"timed out after \d+ milliseconds", "timed out", text)


def curl_get(ctx: VerifyContext, host: HostPlan, url: str, ca: str | None = None,
             cert: str | None = None, key: str | None = None) -> HttpResponse:
    """GET ``url`` from ``host``; ``TransportError`` if no HTTP response (``SshUnavailable``
    propagates: the runner turns it into ``skipped``)."""
    result = ctx.ssh.run(host, curl_command(url, ctx.timeout, ca, cert, key),
                         ctx.timeout + 5, cert is not None)
    if result.exit_status == 0 and _STATUS_MARK in result.stdout:
        body, _, code = result.stdout.rpartition(_STATUS_MARK)
        return HttpResponse(int(code.strip() or 0), body)
    detail = _clean(result.stderr) or f"curl exited {result.exit_status}"
    if result.exit_status == 127:
        raise TransportError("tool", f"curl is not installed on {host.name}")
    if result.exit_status == -1:
        raise TransportError("timeout", detail)
    kind = _CURL_KINDS.get(result.exit_status, "protocol")
    if result.exit_status == 7 and "refused" not in detail.lower():
        kind = "unreachable"
    if kind == "protocol" and re.search(r"alert|certificate", detail, re.IGNORECASE):
        kind = "tls"
    raise TransportError(kind, detail)
