"""The Kubernetes API from the controller, with the admin client certificate.

Scope: ``ApiClient`` tries the apiserver endpoints in order (the load balancer for vip and
external modes, then every control-plane node directly) and keeps using the first that
answers, so losing one control-plane node does not blind the API-based checks.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from provisioner.plan.model import Plan
from provisioner.verify.transport import ClientCreds, HttpResponse, HttpsClient, TransportError


class ApiUnavailable(Exception):
    """No apiserver endpoint answered: API-based checks are skipped (the apiserver checks
    report why)."""


class ApiError(Exception):
    """The apiserver answered with an unexpected status."""

    def __init__(self, status: int, path: str, body: str) -> None:
        super().__init__(f"HTTP {status} for {path}: {body.strip()[:200]}")
        self.status = status


def api_endpoints(plan: Plan) -> tuple[str, ...]:
    """Where the controller can reach an apiserver, preferred first."""
    port = plan.cluster.spec.apiserver.secure_port
    direct = [f"https://{h.address}:{port}" for h in plan.control_plane]
    return tuple(dict.fromkeys([plan.endpoints.admin, *direct]))


class ApiClient:
    """JSON requests to whichever apiserver answers."""

    def __init__(self, https: HttpsClient, endpoints: tuple[str, ...], creds: ClientCreds,
                 timeout: float) -> None:
        self._https = https
        self._endpoints = endpoints
        self.creds = creds
        self._timeout = timeout
        self._lock = threading.Lock()
        self._preferred: str | None = None
        self._dead: set[str] = set()

    def request(self, method: str, path: str, body: Any = None) -> HttpResponse:
        """``method path``; ``ApiUnavailable`` when no endpoint answers at all."""
        data = None if body is None else json.dumps(body).encode()
        with self._lock:
            order = [e for e in self._endpoints if e == self._preferred]
            order += [e for e in self._endpoints if e != self._preferred and e not in self._dead]
        errors: list[str] = []
        for endpoint in order:
            try:
                resp = self._https.request(method, endpoint + path, self.creds, data,
                                           self._timeout)
            except TransportError as exc:
                errors.append(f"{endpoint}: {exc.detail}")
                with self._lock:
                    self._dead.add(endpoint)
                    if self._preferred == endpoint:
                        self._preferred = None
                continue
            with self._lock:
                self._preferred = endpoint
            return resp
        raise ApiUnavailable("no apiserver answered: " + "; ".join(errors or ["no endpoints"]))

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` expecting 200 and a JSON object (``ApiError`` otherwise)."""
        resp = self.request("GET", path)
        if resp.status != 200:
            raise ApiError(resp.status, path, resp.body)
        try:
            data = json.loads(resp.body)
        except ValueError:
            raise ApiError(resp.status, path, "not JSON: " + resp.body) from None
        if not isinstance(data, dict):
            raise ApiError(resp.status, path, "not a JSON object")
        return data
