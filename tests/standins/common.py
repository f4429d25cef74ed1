"""Shared code of the Kubernetes STAND-INs (used only by the lab tests).

This file is not installed on its own: tests/fixtures/debian_artifacts.py generates each
stand-in as ONE self-contained Python file (python3 stdlib only) by concatenating this module,
the flag list of the pinned Kubernetes minor (embedded as JSON) and tests/standins/<name>.py.
Lines between "# standin: strip-begin" and "# standin: strip-end" are removed then.
"""

import base64
import contextlib
import datetime
import http.client
import http.server
import ipaddress  # noqa: F401 - used by the stand-ins concatenated after this module
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

# standin: data-begin
STANDIN_MINOR = "0.0"
KNOWN_FLAGS: frozenset[str] = frozenset()
# standin: data-end

PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "standin"
STANDIN_VERSION = f"v{STANDIN_MINOR}.0-standin"


class StandinError(Exception):
    """A fatal configuration problem: reported on stderr, exit status 1."""


def die(msg: str) -> NoReturn:
    raise StandinError(msg)


def log(msg: str) -> None:
    ts = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"{ts} {PROG} (stand-in): {msg}", file=sys.stderr, flush=True)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> float:
    """RFC 3339 (with or without microseconds) -> epoch seconds; 0 when unparseable."""
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


# --- flags ------------------------------------------------------------------------------------


def parse_args(argv: list[str], required: tuple[str, ...]) -> dict[str, str]:
    """``--name=value`` / bare ``--name`` tokens checked against the pinned minor's flags.

    Exits 1 like cobra on an unknown flag; exits 1 naming a missing required flag; prints the
    version for ``--version``. A bare flag maps to "true".
    """
    flags: dict[str, str] = {}
    for token in argv:
        if not token.startswith("--") or len(token) < 3:
            print(f"Error: unexpected argument {token!r} (the stand-in takes only --name or "
                  "--name=value)", file=sys.stderr)
            sys.exit(1)
        name, sep, value = token[2:].partition("=")
        if name not in KNOWN_FLAGS:
            print(f"Error: unknown flag: --{name}", file=sys.stderr)
            sys.exit(1)
        flags[name] = value if sep else "true"
    if "version" in flags and flags["version"] not in ("false",):
        print(f"Kubernetes {STANDIN_VERSION}")
        sys.exit(0)
    if "help" in flags:
        print(f"{PROG}: STAND-IN for the Kubernetes {PROG} {STANDIN_MINOR}; accepts the "
              f"{len(KNOWN_FLAGS)} flags of the real binary.")
        sys.exit(0)
    missing = [r for r in required if not flags.get(r)]
    if missing:
        print(f"Error: required flag(s) {', '.join('--' + m for m in missing)} not set "
              f"({PROG} stand-in)", file=sys.stderr)
        sys.exit(1)
    return flags


def flag_bool(flags: dict[str, str], name: str, default: bool) -> bool:
    if name not in flags:
        return default
    return flags[name].lower() in ("true", "1", "t", "yes")


# --- files and certificates ---------------------------------------------------------------------


def read_file(path: str, what: str) -> bytes:
    if not path:
        die(f"{what}: no file given")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        die(f"{what}: cannot read {path}: {exc.strerror}")
    if not data.strip():
        die(f"{what}: {path} is empty")
    return data


def cert_info(path: str) -> dict[str, Any]:
    """Subject and SANs of a PEM certificate (Python's own decoder)."""
    read_file(path, "certificate")
    try:
        info: dict[str, Any] = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError) as exc:
        die(f"certificate {path} is not a valid PEM certificate: {exc}")
    return info


def subject_fields(path: str) -> tuple[str, list[str]]:
    """(CN, [O...]) of the certificate at ``path``."""
    cn = ""
    orgs: list[str] = []
    for rdn in cert_info(path).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


def check_pair(cert: str, key: str, what: str) -> None:
    """The certificate and key are readable, valid PEM and belong together."""
    read_file(cert, f"{what} certificate")
    read_file(key, f"{what} key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = "the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc) \
            else f"not a valid certificate/key pair ({exc.reason or exc})"
        die(f"{what}: {cert} + {key}: {reason}")


def _loopback(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              server_hostname: str | None) -> tuple[str | None, str | None]:
    """One TLS handshake over a socketpair; (server error, client error)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    errors: dict[str, str | None] = {"server": None, "client": None}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)  # TLS 1.3: the client certificate is checked after the handshake
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = getattr(exc, "reason", None) or str(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            c.sendall(b"x")
            with contextlib.suppress(ssl.SSLError, OSError):
                c.recv(1)
    except ssl.SSLCertVerificationError as exc:
        errors["client"] = exc.verify_message or str(exc)
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = getattr(exc, "reason", None) or str(exc)
    t.join(10)
    a.close()
    b.close()
    return errors["server"], errors["client"]


def check_serving_cert(cert: str, key: str, ca: str, names: list[str], what: str) -> None:
    """``cert`` is signed by ``ca`` and valid for every name in ``names`` (the SANs clients use),
    checked by a real TLS handshake in this process."""
    check_pair(cert, key, what)
    read_file(ca, f"{what} CA")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    for name in names or [""]:
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            client_ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            die(f"{what}: CA file {ca} is not a valid PEM certificate: {exc}")
        if not name:
            client_ctx.check_hostname = False
        _, err = _loopback(server_ctx, client_ctx, name or None)
        if err:
            if "hostname" in err.lower() or "IP address mismatch" in err:
                die(f"{what}: {cert} is not valid for {name!r} (missing from its "
                    f"subjectAltName): {err}")
            die(f"{what}: {cert} is not accepted with CA {ca}: {err}")


def check_client_cert(cert: str, key: str, ca: str, what: str) -> None:
    """``cert`` is a client certificate signed by ``ca`` (checked by a TLS handshake)."""
    check_pair(cert, key, what)
    read_file(ca, f"{what} CA")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)  # any certificate will do for the server side
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        server_ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        die(f"{what}: CA file {ca} is not a valid PEM certificate: {exc}")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.load_cert_chain(cert, key)
    err, _ = _loopback(server_ctx, client_ctx, None)
    if err:
        die(f"{what}: client certificate {cert} is not accepted by CA {ca}: {err}")


def check_ca(path: str, what: str) -> None:
    read_file(path, what)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        die(f"{what}: {path} is not a valid PEM certificate: {exc}")


def check_private_key(path: str, what: str) -> bytes:
    """A readable private key; returns its public key (PEM) via the openssl CLI."""
    read_file(path, what)
    proc = subprocess.run(["openssl", "pkey", "-in", path, "-pubout"], capture_output=True,
                          timeout=20, check=False)
    if proc.returncode != 0:
        die(f"{what}: {path} is not a valid private key")
    return proc.stdout


def check_public_key(path: str, what: str) -> bytes:
    read_file(path, what)
    proc = subprocess.run(["openssl", "pkey", "-pubin", "-in", path, "-pubout"],
                          capture_output=True, timeout=20, check=False)
    if proc.returncode != 0:
        die(f"{what}: {path} is not a valid public key")
    return proc.stdout


# --- minimal YAML (what our renderer writes) --------------------------------------------------


def _scalar(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    if text[0] == '"':
        return json.loads(text)
    if text[0] == "'" and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if text in ("{}",):
        return {}
    if text in ("[]",):
        return []
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


def _strip_comment(line: str) -> str:
    if "#" not in line:
        return line
    out, quote = [], ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out)


def parse_yaml(text: str) -> Any:
    """Block-style YAML of maps, lists and scalars (no anchors, no flow collections beyond
    ``{}``/``[]``, no multi-line strings): the subset our templates render."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    value, _ = _block(lines, 0, lines[0][0] if lines else 0)
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if i >= len(lines):
        return None, i
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        seq: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and (
                lines[i][1].startswith("- ") or lines[i][1] == "-"):
            rest = lines[i][1][2:].strip() if lines[i][1] != "-" else ""
            if not rest:
                item, i = _block(lines, i + 1, lines[i + 1][0] if i + 1 < len(lines) else 0)
                seq.append(item)
                continue
            if _is_mapping_entry(rest):
                # "- key: v" starts a mapping whose further keys sit at indent + 2
                sub = [(indent + 2, rest)]
                j = i + 1
                while j < len(lines) and lines[j][0] > indent:
                    sub.append(lines[j])
                    j += 1
                item, _ = _block(sub, 0, indent + 2)
                seq.append(item)
                i = j
            else:
                seq.append(_scalar(rest))
                i += 1
        return seq, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        content = lines[i][1]
        if not _is_mapping_entry(content):
            raise ValueError(f"cannot parse YAML line: {content!r}")
        key, _, rest = content.partition(":")
        key = _scalar(key) if key.startswith('"') else key.strip()
        if rest.strip():
            mapping[key] = _scalar(rest)
            i += 1
        elif i + 1 < len(lines) and (lines[i + 1][0] > indent or (
                lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "))):
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            mapping[key] = None
            i += 1
    return mapping, i


def _is_mapping_entry(text: str) -> bool:
    if text.startswith('"'):
        try:
            end = text.index('"', 1)
        except ValueError:
            return False
        return text[end + 1:].startswith(":")
    head = text.split(" ", 1)[0]
    return ":" in text and (head.endswith(":") or ": " in text or text.endswith(":"))


def read_yaml(path: str, what: str) -> Any:
    data = read_file(path, what)
    try:
        return parse_yaml(data.decode())
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        die(f"{what}: {path} is not YAML this stand-in understands: {exc}")


class Kubeconfig:
    """The current context's server, CA and client credentials (files or embedded data)."""

    def __init__(self, path: str, what: str) -> None:
        doc = read_yaml(path, what)
        if not isinstance(doc, dict):
            die(f"{what}: {path} is not a kubeconfig")
        self.path = path
        ctx_name = doc.get("current-context")
        contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []}
        if ctx_name not in contexts:
            die(f"{what}: {path}: current-context {ctx_name!r} is not defined")
        ctx = contexts[ctx_name]
        clusters = {c.get("name"): c.get("cluster") or {} for c in doc.get("clusters") or []}
        users = {u.get("name"): u.get("user") or {} for u in doc.get("users") or []}
        if ctx.get("cluster") not in clusters or ctx.get("user") not in users:
            die(f"{what}: {path}: context {ctx_name!r} names an undefined cluster or user")
        cluster, user = clusters[ctx["cluster"]], users[ctx["user"]]
        self.server = str(cluster.get("server") or "")
        if not self.server.startswith("https://"):
            die(f"{what}: {path}: the cluster server must be an https:// URL")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca = self._file(cluster, "certificate-authority", what)
        self.cert = self._file(user, "client-certificate", what)
        self.key = self._file(user, "client-key", what)
        check_ca(self.ca, f"{what} CA")
        check_client_cert(self.cert, self.key, self.ca, f"{what} client credentials")
        self.user, self.groups = subject_fields(self.cert)
        hostport = self.server[len("https://"):].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = hostport, "443"
        self.host = host.strip("[]")
        self.port = int(port)

    def _file(self, section: dict[str, Any], field: str, what: str) -> str:
        if section.get(field):
            return str(section[field])
        data = section.get(f"{field}-data")
        if not data:
            die(f"{what}: {self.path} has neither {field} nor {field}-data")
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="standin-kubeconfig-")
        out = os.path.join(self._tmp.name, field)
        with open(out, "wb") as f:
            f.write(base64.b64decode(str(data)))
        return out


# --- HTTPS client -----------------------------------------------------------------------------


class ApiClient:
    """JSON over HTTPS to the API server with a client certificate; verifies the server."""

    def __init__(self, kc: Kubeconfig, timeout: float = 10.0) -> None:
        self.kc = kc
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=kc.ca)
        self.ctx.load_cert_chain(kc.cert, kc.key)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        """(status, decoded JSON or text); raises OSError/ssl.SSLError when unreachable."""
        conn = http.client.HTTPSConnection(self.kc.host, self.kc.port, context=self.ctx,
                                           timeout=self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Accept": "application/json", "User-Agent": f"{PROG}/{STANDIN_VERSION}"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()


def wait_for_apiserver(api: ApiClient, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while True:
        try:
            status, body = api.request("GET", "/readyz")
            if status == 200:
                return
            last = f"/readyz answered {status}: {body}"
        except ssl.SSLCertVerificationError as exc:
            die(f"API server {api.kc.server}: its certificate is not accepted with CA "
                f"{api.kc.ca}: {exc.verify_message}")
        except (OSError, ssl.SSLError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            die(f"API server {api.kc.server} did not answer within {seconds:.0f}s: {last}")
        time.sleep(1)


# --- leases -----------------------------------------------------------------------------------


class LeaseHolder:
    """Acquire/renew a coordination.k8s.io/v1 Lease (leader election or node heartbeat)."""

    def __init__(self, api: ApiClient, namespace: str, name: str, identity: str,
                 duration: int, always: bool = False) -> None:
        self.api, self.ns, self.name, self.identity = api, namespace, name, identity
        self.duration = duration
        self.always = always  # node leases: the holder is always this node
        self.leader = False

    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases/{self.name}"

    def try_once(self) -> bool:
        status, body = self.api.request("GET", self.path())
        now = now_micro()
        if status == 404:
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.ns},
                     "spec": {"holderIdentity": self.identity,
                              "leaseDurationSeconds": self.duration, "acquireTime": now,
                              "renewTime": now, "leaseTransitions": 0}}
            status, body = self.api.request(
                "POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases", lease)
            return self._result(status, body, "create")
        if status != 200 or not isinstance(body, dict):
            log(f"lease {self.ns}/{self.name}: GET answered {status}: {body}")
            self.leader = False
            return False
        spec = body.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        renewed = parse_time(str(spec.get("renewTime") or ""))
        expired = time.time() > renewed + int(spec.get("leaseDurationSeconds") or self.duration)
        if holder != self.identity and not expired and not self.always:
            if self.leader:
                log(f"lost lease {self.ns}/{self.name} to {holder}")
            self.leader = False
            return False
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update({"holderIdentity": self.identity, "renewTime": now,
                     "leaseDurationSeconds": self.duration})
        status, body = self.api.request("PUT", self.path(), body)
        return self._result(status, body, "renew")

    def _result(self, status: int, body: Any, what: str) -> bool:
        ok = status in (200, 201)
        if ok and not self.leader and not self.always:
            log(f"acquired lease {self.ns}/{self.name} as {self.identity}")
        if not ok and status != 409:
            log(f"lease {self.ns}/{self.name}: {what} answered {status}: {body}")
        self.leader = ok
        return ok


# --- HTTPS server -----------------------------------------------------------------------------


class TLSServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose connections are TLS-wrapped in the worker thread (a slow or
    failing client handshake never blocks accept)."""

    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: Any, ctx: ssl.SSLContext | None) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)
        self.tls = ctx

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log(f"TLS handshake from {client_address[0]} refused: "
                f"{getattr(exc, 'reason', None) or exc}")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError) as exc:
            log(f"connection from {client_address[0]}: {getattr(exc, 'reason', None) or exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class JSONHandler(http.server.BaseHTTPRequestHandler):
    """Request handler with JSON helpers; logs method, path, identity and status (no bodies)."""

    protocol_version = "HTTP/1.1"
    server_version = f"{PROG}-standin"
    identity = "-"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def peer_identity(self) -> tuple[str, list[str]]:
        cert: Any = self.connection.getpeercert() \
            if isinstance(self.connection, ssl.SSLSocket) else None
        cn, orgs = "", []
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
                elif key == "organizationName":
                    orgs.append(value)
        return cn, orgs

    def body_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        return json.loads(raw)

    def send_json(self, status: int, obj: Any) -> None:
        data = (json.dumps(obj, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        log(f"{self.command} {self.path} user={self.identity!r} -> {status}")

    def send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        log(f"{self.command} {self.path} user={self.identity!r} -> {status}")


def status_obj(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def serve_in_thread(server: TLSServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t


def server_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca)
    return ctx


def bind(host: str, port: int, handler: Any, ctx: ssl.SSLContext | None,
         what: str) -> TLSServer:
    try:
        return TLSServer((host, port), handler, ctx)
    except OSError as exc:
        die(f"{what}: cannot listen on {host}:{port}: {exc.strerror}")


def sd_notify(message: str) -> None:
    """systemd notification (Type=notify units); a no-op without $NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError as exc:
            log(f"sd_notify failed: {exc}")


def holder_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        die(f"{what}: {value!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_main(main: Callable[[list[str]], int]) -> None:
    try:
        code = main(sys.argv[1:])
    except StandinError as exc:
        log(f"error: {exc}")
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(0)
    sys.exit(code)


# --- controller-manager / scheduler -----------------------------------------------------------


class HealthHandler(JSONHandler):
    """/healthz (and /livez, /readyz): ok while the API server answered recently."""

    checker: Callable[[], str | None] = staticmethod(lambda: None)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/livez", "/readyz"):
            err = type(self).checker()
            self.send_text(200 if err is None else 500, "ok" if err is None else err)
        else:
            self.send_json(404, status_obj(404, "NotFound", f"{path}: not served by the "
                                           "stand-in"))


def run_leader_elected(flags: dict[str, str], lease_name: str, default_port: int,
                       work: Callable[[ApiClient], None] | None = None) -> int:
    """The common life of kube-controller-manager and kube-scheduler stand-ins: check the
    kubeconfig(s), reach the API server, serve /healthz over HTTPS, hold the leader Lease."""
    kc = Kubeconfig(flags["kubeconfig"], "--kubeconfig")
    for extra in ("authentication-kubeconfig", "authorization-kubeconfig"):
        if flags.get(extra):
            Kubeconfig(flags[extra], f"--{extra}")
    api = ApiClient(kc)
    wait_for_apiserver(api, float(os.environ.get("STANDIN_APISERVER_WAIT", "60")))
    log(f"API server {kc.server} answers (as {kc.user})")
    state: dict[str, Any] = {"last_ok": time.monotonic(), "error": None}

    def healthy() -> str | None:
        if state["error"] and time.monotonic() - state["last_ok"] > 30:
            return f"API server not reachable: {state['error']}"
        return None

    handler = type("Health", (HealthHandler,), {"checker": staticmethod(healthy)})
    host = flags.get("bind-address") or "0.0.0.0"
    port = int(flags.get("secure-port") or default_port)
    # The real component self-signs a serving certificate; the stand-in serves with its
    # client certificate (clients of /healthz do not verify it, like with the real one).
    server = bind(host, port, handler, server_context(kc.cert, kc.key, None),
                  "--bind-address/--secure-port")
    serve_in_thread(server)
    log(f"serving HTTPS /healthz on {host}:{port}")
    elect = flag_bool(flags, "leader-elect", True)
    lease = LeaseHolder(api, flags.get("leader-elect-resource-namespace") or "kube-system",
                        flags.get("leader-elect-resource-name") or lease_name,
                        holder_identity(), 15)
    while True:
        try:
            if elect:
                lease.try_once()
            else:
                api.request("GET", "/readyz")
            if work is not None and (lease.leader or not elect):
                work(api)
            state["last_ok"], state["error"] = time.monotonic(), None
        except (OSError, ssl.SSLError) as exc:
            state["error"] = str(exc)
            if lease.leader:
                log(f"cannot renew lease: {exc}")
            lease.leader = False
        time.sleep(2)
