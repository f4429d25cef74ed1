"""STAND-IN for kube-apiserver, used only by the lab tests.

The official kube-apiserver cannot be downloaded on the test machines. This stand-in accepts
exactly the flags of the real kube-apiserver of the pinned minor (any other flag: "Error:
unknown flag"), requires the flags a secure cluster needs, and refuses unreadable, mismatched
or wrongly signed certificates and keys (serving certificate without the SANs clients use,
etcd client certificate not from the etcd CA, service-account key pair that does not match).

It talks mTLS to the real etcd through etcd's v3 JSON gateway and exits 1 when no etcd endpoint
answers within 20 s; it serves HTTPS with the rendered serving certificate, requires client
certificates signed by --client-ca-file (no anonymous access) and authorizes by the client
certificate's CN/O (system:masters: everything; system:node:<n>: its own Node and Lease only;
controller-manager, scheduler, kube-proxy: read nodes, manage kube-system leases).
It answers /livez, /readyz, /healthz, /version, Nodes (/api/v1/nodes...) and
coordination.k8s.io/v1 Leases, stored as JSON in etcd under /registry/. Nothing else of the
Kubernetes API exists here: no RBAC objects, no admission, no watch, no pods.
"""

# standin: strip-begin
import base64
import http.client
import ipaddress
import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.standins.common import (
    STANDIN_MINOR,
    STANDIN_VERSION,
    JSONHandler,
    bind,
    check_ca,
    check_client_cert,
    check_private_key,
    check_public_key,
    check_serving_cert,
    die,
    flag_bool,
    log,
    now_rfc3339,
    parse_args,
    read_file,
    run_main,
    sd_notify,
    serve_in_thread,
    server_context,
    status_obj,
)

# standin: strip-end

REQUIRED = ("etcd-servers", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "tls-cert-file",
            "tls-private-key-file", "client-ca-file", "service-account-issuer",
            "service-account-key-file", "service-account-signing-key-file",
            "service-cluster-ip-range")
ETCD_WAIT = float(os.environ.get("STANDIN_ETCD_WAIT", "20"))
CONTROL_PLANE_USERS = ("system:kube-controller-manager", "system:kube-scheduler",
                       "system:kube-proxy")


_VERBS = ["create", "get", "list", "patch", "update"]
_COORD = {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}
# Discovery documents, so that clients such as kubectl can find nodes and leases.
DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
         "verbs": _VERBS, "shortNames": ["no"]},
        {"name": "nodes/status", "singularName": "", "namespaced": False, "kind": "Node",
         "verbs": ["get", "patch", "update"]}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "coordination.k8s.io", "versions": [_COORD], "preferredVersion": _COORD}]},
    "/apis/coordination.k8s.io/v1": {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1",
        "resources": [{"name": "leases", "singularName": "lease", "namespaced": True,
                       "kind": "Lease", "verbs": _VERBS}]},
}


class EtcdError(Exception):
    pass


class Etcd:
    """etcd v3 over its JSON gateway (etcd 3.4+: /v3/kv/...), mTLS, endpoints in turn."""

    def __init__(self, endpoints: list[str], ca: str, cert: str, key: str) -> None:
        self.endpoints = endpoints
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self.lock = threading.Lock()
        self.preferred = 0

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        errors = []
        n = len(self.endpoints)
        for k in range(n):
            idx = (self.preferred + k) % n
            ep = self.endpoints[idx]
            hostport = ep.split("://", 1)[-1].rstrip("/")
            host, _, port = hostport.rpartition(":")
            conn = http.client.HTTPSConnection(host.strip("[]"), int(port), context=self.ctx,
                                               timeout=5)
            try:
                data = json.dumps(body).encode() if body is not None else None
                conn.request(method, path, body=data,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    errors.append(f"{ep}: HTTP {resp.status} {raw[:200]!r}")
                    continue
                self.preferred = idx
                return json.loads(raw) if raw else {}
            except ssl.SSLCertVerificationError as exc:
                errors.append(f"{ep}: etcd server certificate refused: {exc.verify_message}")
            except (OSError, ssl.SSLError, ValueError) as exc:
                errors.append(f"{ep}: {getattr(exc, 'reason', None) or exc}")
            finally:
                conn.close()
        raise EtcdError("; ".join(errors))

    @staticmethod
    def _b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    def health(self) -> None:
        out = self._call("GET", "/health")
        if str(out.get("health")) != "true":
            raise EtcdError(f"etcd reports unhealthy: {out}")

    def get(self, key: str) -> tuple[Any, int] | None:
        out = self._call("POST", "/v3/kv/range", {"key": self._b64(key)})
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        return json.loads(base64.b64decode(kvs[0]["value"])), int(kvs[0]["mod_revision"])

    def list(self, prefix: str) -> tuple[list[tuple[Any, int]], int]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        out = self._call("POST", "/v3/kv/range",
                         {"key": self._b64(prefix), "range_end": self._b64(end)})
        rev = int(out.get("header", {}).get("revision") or 0)
        return [(json.loads(base64.b64decode(kv["value"])), int(kv["mod_revision"]))
                for kv in out.get("kvs") or []], rev

    def put_if(self, key: str, value: Any, mod_revision: int | None) -> int | None:
        """Put when the key's mod revision is ``mod_revision`` (0 = must not exist; None = any).
        Returns the new revision, or None when the compare failed."""
        put = {"request_put": {"key": self._b64(key),
                               "value": self._b64(json.dumps(value, sort_keys=True))}}
        compare = []
        if mod_revision is not None:
            compare.append({"key": self._b64(key), "target": "MOD", "result": "EQUAL",
                            "mod_revision": str(mod_revision)})
        out = self._call("POST", "/v3/kv/txn", {"compare": compare, "success": [put]})
        if not out.get("succeeded"):
            return None
        return int(out.get("header", {}).get("revision") or 0)


class State:
    flags: dict[str, str]
    etcd: Etcd


STATE = State()


def allowed(user: str, groups: list[str], verb: str, kind: str, ns: str, name: str) -> bool:
    """The Node authorizer + the default RBAC roles, reduced to what this API offers."""
    if "system:masters" in groups:
        return True
    if user.startswith("system:node:") and "system:nodes" in groups:
        node = user[len("system:node:"):]
        if kind == "nodes":
            return verb in ("get", "list") or name == node
        if kind == "leases":
            return ns == "kube-node-lease" and name == node
        return False
    if user in CONTROL_PLANE_USERS:
        if kind == "nodes":
            if verb in ("get", "list"):
                return True
            return user == "system:kube-controller-manager" and verb == "update-status"
        if kind == "leases":
            return ns == "kube-system" and user != "system:kube-proxy"
    return False


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class Handler(JSONHandler):
    def do_GET(self) -> None:
        self.route("GET")

    def do_HEAD(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_PUT(self) -> None:
        self.route("PUT")

    def do_PATCH(self) -> None:
        self.route("PATCH")

    def do_DELETE(self) -> None:
        self.route("DELETE")

    def route(self, method: str) -> None:
        user, groups = self.peer_identity()
        self.identity = user or "-"
        if not user:  # CERT_REQUIRED makes this unreachable; kept as a second lock
            self.send_json(401, status_obj(401, "Unauthorized", "Unauthorized"))
            return
        path, _, query = self.path.partition("?")
        parts = [p for p in path.split("/") if p]
        try:
            if method == "GET" and path in ("/livez", "/healthz", "/readyz"):
                self.health(path, query)
            elif method == "GET" and path == "/version":
                self.version()
            elif parts[:2] == ["api", "v1"] and parts[2:3] == ["nodes"]:
                self.nodes(method, parts[3:], user, groups)
            elif (parts[:3] == ["apis", "coordination.k8s.io", "v1"] and
                  parts[3:4] == ["namespaces"] and parts[5:6] == ["leases"] and
                  len(parts) in (6, 7)):
                self.leases(method, parts[4], parts[6] if len(parts) == 7 else "", user,
                            groups)
            elif method == "GET" and path.rstrip("/") in DISCOVERY:
                self.send_json(200, DISCOVERY[path.rstrip("/")])
            else:
                self.send_json(404, status_obj(404, "NotFound",
                                               f"the server could not find the requested "
                                               f"resource (stand-in): {method} {path}"))
        except EtcdError as exc:
            log(f"etcd error: {exc}")
            self.send_json(503, status_obj(503, "ServiceUnavailable",
                                           "etcd is not available (stand-in)"))
        except (ValueError, KeyError, TypeError) as exc:
            self.send_json(400, status_obj(400, "BadRequest", f"bad request: {exc}"))

    # -- health and version
    def health(self, path: str, query: str) -> None:
        checks: list[tuple[str, Callable[[], str | None] | None]] = [("ping", None)]
        if path != "/livez":
            checks.append(("etcd", self._etcd_ok))
        lines, ok = [], True
        for name, fn in checks:
            err = fn() if fn else None
            ok = ok and err is None
            lines.append(f"[+]{name} ok" if err is None else f"[-]{name} failed: {err}")
        what = path.strip("/")
        if "verbose" in query.split("&"):
            text = "\n".join(lines) + f"\n{what} check {'passed' if ok else 'failed'}\n"
        else:
            text = "ok" if ok else "\n".join(lines) + f"\n{what} check failed\n"
        self.send_text(200 if ok else 500, text)

    def _etcd_ok(self) -> str | None:
        try:
            STATE.etcd.health()
            return None
        except EtcdError:
            return "etcd not reachable"

    def version(self) -> None:
        major, minor = STANDIN_MINOR.split(".")
        self.send_json(200, {"major": major, "minor": minor, "gitVersion": STANDIN_VERSION,
                             "gitCommit": "standin", "gitTreeState": "clean",
                             "buildDate": "1970-01-01T00:00:00Z", "goVersion": "none (stand-in)",
                             "compiler": "python3", "platform": "linux/amd64"})

    def forbid(self, user: str, verb: str, kind: str, ns: str, name: str) -> None:
        where = f" in the namespace {ns!r}" if ns else ""
        self.send_json(403, status_obj(403, "Forbidden",
                                       f'{kind} "{name}" is forbidden: User "{user}" cannot '
                                       f"{verb} resource {kind!r}{where} (stand-in authorizer)"))

    # -- nodes
    def nodes(self, method: str, rest: list[str], user: str, groups: list[str]) -> None:
        name = rest[0] if rest else ""
        sub = rest[1] if len(rest) > 1 else ""
        if len(rest) > 2 or sub not in ("", "status"):
            self.send_json(404, status_obj(404, "NotFound", "no such node subresource"))
            return
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        status_write = sub == "status" and verb in ("update", "patch")
        verb_authz = "update-status" if status_write else verb
        if verb != "create" and not allowed(user, groups, verb_authz, "nodes", "", name):
            self.forbid(user, verb, "nodes", "", name)
            return
        if verb == "list":
            items, rev = STATE.etcd.list("/registry/minions/")
            self.send_json(200, {"kind": "NodeList", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": str(rev)},
                                 "items": [self._with_rv(o, r) for o, r in items]})
            return
        if verb == "create":
            obj = self.body_json()
            name = str(((obj or {}).get("metadata") or {}).get("name") or "")
            if not name:
                self.send_json(400, status_obj(400, "BadRequest", "metadata.name is required"))
                return
            if not allowed(user, groups, "create", "nodes", "", name):
                self.forbid(user, "create", "nodes", "", name)
                return
            self._create("/registry/minions/" + name, obj, "Node", "v1", "", name)
            return
        self._object(method, verb, "/registry/minions/" + name, "Node", "v1", "", name,
                     status_only=sub == "status")

    # -- leases
    def leases(self, method: str, ns: str, name: str, user: str, groups: list[str]) -> None:
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        obj = self.body_json() if method in ("POST", "PUT", "PATCH") else None
        target = name or str(((obj or {}).get("metadata") or {}).get("name") or "")
        if not allowed(user, groups, verb, "leases", ns, target):
            self.forbid(user, verb, "leases", ns, target)
            return
        prefix = f"/registry/leases/{ns}/"
        if verb == "list":
            items, rev = STATE.etcd.list(prefix)
            self.send_json(200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                                 "metadata": {"resourceVersion": str(rev)},
                                 "items": [self._with_rv(o, r) for o, r in items]})
        elif verb == "create":
            if not target:
                self.send_json(400, status_obj(400, "BadRequest", "metadata.name is required"))
                return
            self._create(prefix + target, obj, "Lease", "coordination.k8s.io/v1", ns, target)
        else:
            self._object(method, verb, prefix + name, "Lease", "coordination.k8s.io/v1", ns,
                         name, body=obj)

    # -- storage helpers
    @staticmethod
    def _with_rv(obj: Any, rev: int) -> Any:
        obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
        return obj

    def _create(self, key: str, obj: Any, kind: str, api_version: str, ns: str,
                name: str) -> None:
        if not isinstance(obj, dict):
            self.send_json(400, status_obj(400, "BadRequest", "body must be a JSON object"))
            return
        obj["kind"], obj["apiVersion"] = kind, api_version
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if ns:
            meta["namespace"] = ns
        meta.pop("resourceVersion", None)
        meta["creationTimestamp"] = now_rfc3339()
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        rev = STATE.etcd.put_if(key, obj, 0)
        if rev is None:
            self.send_json(409, status_obj(409, "AlreadyExists",
                                           f'{kind.lower()}s "{name}" already exists'))
            return
        self.send_json(201, self._with_rv(obj, rev))

    def _object(self, method: str, verb: str, key: str, kind: str, api_version: str, ns: str,
                name: str, status_only: bool = False, body: Any = None) -> None:
        current = STATE.etcd.get(key)
        if current is None:
            self.send_json(404, status_obj(404, "NotFound", f'{kind.lower()}s "{name}" not found'))
            return
        obj, rev = current
        if verb == "get":
            self.send_json(200, self._with_rv(obj, rev))
            return
        if verb == "delete":
            self.send_json(405, status_obj(405, "MethodNotAllowed",
                                           "delete is not implemented by the stand-in"))
            return
        new = body if body is not None else self.body_json()
        if not isinstance(new, dict):
            self.send_json(400, status_obj(400, "BadRequest", "body must be a JSON object"))
            return
        if verb == "patch":
            want_rv = None
            new = merge_patch(obj, new)
        else:
            want_rv_text = str((new.get("metadata") or {}).get("resourceVersion") or "")
            want_rv = int(want_rv_text) if want_rv_text.isdigit() else None
        if status_only:  # /status changes only .status
            new = dict(obj, status=new.get("status", obj.get("status")))
        new["kind"], new["apiVersion"] = kind, api_version
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        for keep in ("uid", "creationTimestamp"):
            if keep in (obj.get("metadata") or {}):
                meta[keep] = obj["metadata"][keep]
        if ns:
            meta["namespace"] = ns
        meta.pop("resourceVersion", None)
        new_rev = STATE.etcd.put_if(key, new, want_rv if want_rv is not None else rev)
        if new_rev is None:
            self.send_json(409, status_obj(409, "Conflict",
                                           f'Operation cannot be fulfilled on {kind.lower()}s '
                                           f'"{name}": the object has been modified; please '
                                           "apply your changes to the latest version and try "
                                           "again"))
            return
        self.send_json(200, self._with_rv(new, new_rev))


def check_inputs(flags: dict[str, str]) -> list[str]:
    """Every certificate, key and file the flags name; returns the etcd endpoints."""
    client_ca = flags["client-ca-file"]
    check_ca(client_ca, "--client-ca-file")
    check_ca(flags["etcd-cafile"], "--etcd-cafile")
    check_client_cert(flags["etcd-certfile"], flags["etcd-keyfile"], flags["etcd-cafile"],
                      "--etcd-certfile/--etcd-keyfile (etcd client)")
    # The serving certificate must be valid for the names clients use: the advertise address,
    # the local address (kubelets reach the API through a local load balancer) and the first
    # IP of the service range (in-cluster clients). Our PKI signs it with the cluster CA.
    names = ["127.0.0.1"]
    if flags.get("advertise-address"):
        names.insert(0, flags["advertise-address"])
    try:
        first = next(iter(ipaddress.ip_network(
            flags["service-cluster-ip-range"].split(",")[0], strict=True).hosts()))
    except (ValueError, StopIteration):
        die(f"--service-cluster-ip-range: {flags['service-cluster-ip-range']!r} is not a CIDR")
    names.append(str(first))
    check_serving_cert(flags["tls-cert-file"], flags["tls-private-key-file"], client_ca, names,
                       "--tls-cert-file/--tls-private-key-file (serving)")
    pub = check_public_key(flags["service-account-key-file"], "--service-account-key-file")
    signing = check_private_key(flags["service-account-signing-key-file"],
                                "--service-account-signing-key-file")
    if pub != signing:
        die(f"--service-account-signing-key-file {flags['service-account-signing-key-file']} "
            f"does not match --service-account-key-file {flags['service-account-key-file']}")
    if flags.get("kubelet-client-certificate") or flags.get("kubelet-client-key"):
        check_client_cert(flags.get("kubelet-client-certificate", ""),
                          flags.get("kubelet-client-key", ""),
                          flags.get("kubelet-certificate-authority") or client_ca,
                          "--kubelet-client-certificate/--kubelet-client-key")
    if flags.get("proxy-client-cert-file") or flags.get("proxy-client-key-file"):
        ca = flags.get("requestheader-client-ca-file", "")
        if not ca:
            die("--proxy-client-cert-file needs --requestheader-client-ca-file")
        check_client_cert(flags.get("proxy-client-cert-file", ""),
                          flags.get("proxy-client-key-file", ""), ca,
                          "--proxy-client-cert-file/--proxy-client-key-file (front proxy)")
    for flag in ("encryption-provider-config", "audit-policy-file"):
        if flags.get(flag):
            read_file(flags[flag], f"--{flag}")
    if flags.get("audit-log-path") and flags["audit-log-path"] != "-":
        try:
            os.makedirs(os.path.dirname(flags["audit-log-path"]), exist_ok=True)
            with open(flags["audit-log-path"], "a"):
                pass
        except OSError as exc:
            die(f"--audit-log-path: cannot write {flags['audit-log-path']}: {exc.strerror}")
    if flag_bool(flags, "anonymous-auth", True):
        log("warning: --anonymous-auth is not false; the stand-in never serves anonymous "
            "requests anyway")
    endpoints = [e.strip() for e in flags["etcd-servers"].split(",") if e.strip()]
    for e in endpoints:
        if not e.startswith("https://"):
            die(f"--etcd-servers: {e} is not an https:// URL (etcd is reached over mTLS)")
    return endpoints


def main(argv: list[str]) -> int:
    flags = parse_args(argv, REQUIRED)
    endpoints = check_inputs(flags)
    STATE.flags = flags
    STATE.etcd = Etcd(endpoints, flags["etcd-cafile"], flags["etcd-certfile"],
                      flags["etcd-keyfile"])
    deadline = time.monotonic() + ETCD_WAIT
    while True:
        try:
            STATE.etcd.health()
            STATE.etcd.get("/registry/health-probe")
            break
        except EtcdError as exc:
            if time.monotonic() > deadline:
                die(f"cannot reach etcd at {', '.join(endpoints)} within {ETCD_WAIT:.0f}s: {exc}")
            time.sleep(1)
    log(f"etcd answers at {', '.join(endpoints)}")
    port = int(flags.get("secure-port") or 6443)
    host = flags.get("bind-address") or "0.0.0.0"
    ctx = server_context(flags["tls-cert-file"], flags["tls-private-key-file"],
                         flags["client-ca-file"])
    server = bind(host, port, Handler, ctx, "--bind-address/--secure-port")
    serve_in_thread(server)
    log(f"serving HTTPS on {host}:{port} (client certificates from {flags['client-ca-file']})")
    sd_notify("READY=1")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    run_main(main)
