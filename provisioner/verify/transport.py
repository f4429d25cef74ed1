"""HTTPS from the controller with client certificates, and the error kinds checks map to hints.

Scope: ``HttpsClient`` (the protocol checks use, faked in tests) and ``TlsClient`` (Python's
``ssl`` and ``http.client``, verifying the server against the cluster CA and its address).
Every failure becomes a ``TransportError`` whose ``kind`` separates a certificate problem
(``tls-verify``) from a service that is down (``refused``) or a host that is gone
(``timeout``/``unreachable``): each needs a different fix.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from cryptography import x509

from provisioner.pki import describe_certificate

ErrorKind = Literal[
    "tls-verify",  # the server's certificate does not verify (CA, hostname, expiry)
    "tls",  # handshake or alert: e.g. our client certificate was rejected
    "refused",  # nothing listens: the service is down
    "timeout",  # no answer in time: host down or filtered
    "unreachable",  # no route, DNS failure
    "protocol",  # connected, but not HTTP(S) as expected
    "credentials",  # our own certificate/key/CA files cannot be loaded
    "tool",  # a program the request needs (curl) is missing on the host
]


class TransportError(Exception):
    """A request that got no HTTP response."""

    def __init__(self, kind: ErrorKind, detail: str, served: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ErrorKind = kind
        self.detail = detail
        self.served = served  # description of the certificate the server presented, if known


@dataclass(frozen=True)
class ClientCreds:
    """CA to verify the server with, and the client certificate pair to present."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class HttpResponse:
    """Status and body (decoded as UTF-8, replacing bad bytes)."""

    status: int
    body: str


class HttpsClient(Protocol):
    """Makes one HTTPS request; raises ``TransportError`` when no response arrives."""

    def request(self, method: str, url: str, creds: ClientCreds, body: bytes | None,
                timeout: float) -> HttpResponse:
        """``method url`` with ``body`` (JSON) presenting ``creds``."""
        ...


class TlsClient:
    """``HttpsClient`` over ``ssl`` + ``http.client``; SSL contexts are cached per creds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[ClientCreds, ssl.SSLContext] = {}

    def _context(self, creds: ClientCreds) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(creds)
            if ctx is None:
                ctx = self._contexts[creds] = _make_context(creds)
            return ctx

    def request(self, method: str, url: str, creds: ClientCreds, body: bytes | None = None,
                timeout: float = 5.0) -> HttpResponse:
        """See ``HttpsClient.request``."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        ctx = self._context(creds)
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path or "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return HttpResponse(resp.status, data.decode("utf-8", "replace"))
        except ssl.SSLCertVerificationError as exc:
            detail = exc.verify_message or exc.reason or str(exc)
            raise TransportError("tls-verify", f"certificate verify failed: {detail}",
                                 served_certificate(host, port, creds, timeout)) from None
        except ssl.SSLError as exc:
            raise TransportError("tls", exc.reason or str(exc)) from None
        except ConnectionRefusedError:
            raise TransportError("refused", "connection refused") from None
        except TimeoutError:
            raise TransportError("timeout", f"no answer within {timeout:g}s") from None
        except ConnectionResetError:
            raise TransportError("protocol", "connection reset by peer") from None
        except OSError as exc:
            raise TransportError("unreachable", exc.strerror or str(exc)) from None
        except http.client.HTTPException as exc:
            raise TransportError("protocol", f"bad HTTP response: {exc!r}") from None
        finally:
            conn.close()


def _make_context(creds: ClientCreds) -> ssl.SSLContext:
    missing = [str(p) for p in (creds.ca, creds.cert, creds.key) if not p.is_file()]
    if missing:
        raise TransportError("credentials", "missing " + ", ".join(missing))
    try:
        ctx = ssl.create_default_context(cafile=str(creds.ca))
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
    except FileNotFoundError as exc:
        raise TransportError("credentials", f"{exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TransportError("credentials", f"cannot load {creds.cert} / {creds.key} "
                             f"/ {creds.ca}: {exc}") from None
    return ctx


def served_certificate(host: str, port: int, creds: ClientCreds, timeout: float) -> str:
    """A description of the certificate ``host:port`` presents, fetched without verifying it
    (evidence for a verification failure); empty when it cannot be fetched."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Without our pair, servers that require a client certificate refuse: best effort.
    with contextlib.suppress(ssl.SSLError, OSError):
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
    try:
        with (socket.create_connection((host, port), timeout=timeout) as sock,
              ctx.wrap_socket(sock, server_hostname=host) as tls):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return ""
    if not der:
        return ""
    cert = x509.load_der_x509_certificate(der)
    return (f"served certificate: {describe_certificate(cert)}; "
            f"notAfter={cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
