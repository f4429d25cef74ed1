"""Helpers shared by checks: turning transport errors into outcomes with the right hint."""

from __future__ import annotations

from provisioner.verify.model import Outcome, fail
from provisioner.verify.transport import TransportError


def journal_hint(unit: str, host: str) -> str:
    """Where to look when a unit misbehaves."""
    return f"`systemctl status {unit}` and `journalctl -u {unit} -n 50` on {host}"


def transport_failure(exc: TransportError, url: str, unit: str, host: str,
                      cert_hint: str) -> Outcome:
    """A failed request to ``url`` served by systemd ``unit`` on ``host``.

    A certificate problem gets ``cert_hint`` (re-render and converge the certificate), a
    refused connection the service's journal, a timeout the host itself.
    """
    evidence = f"{url}: {exc.detail}"
    if exc.served:
        evidence += f" ({exc.served})"
    if exc.kind == "tls-verify":
        return fail(evidence, cert_hint)
    if exc.kind == "tls":
        return fail(evidence, "the TLS handshake failed: the server may reject our client "
                    "certificate (signed by another CA?) or its own certificate/key pair is "
                    f"broken; {cert_hint}")
    if exc.kind == "refused":
        return fail(evidence, f"{unit} is not listening: {journal_hint(unit, host)}")
    if exc.kind in ("timeout", "unreachable"):
        return fail(evidence, f"{host} does not answer: is it up (`ssh` check) and is "
                    f"{unit} stuck? {journal_hint(unit, host)}")
    if exc.kind == "credentials":
        return fail(evidence, "the client certificate files in the state directory cannot "
                    "be read: run `provisioner render FILE --out DIR` to recreate the PKI")
    if exc.kind == "tool":
        return fail(evidence, f"install curl on {host} (the os phase does: "
                    "`provisioner provision FILE --only os`)")
    return fail(evidence, f"{url} did not answer HTTP properly: {journal_hint(unit, host)}")


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of ``text``, shortened."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
