"""STAND-IN for kube-proxy, used only by the lab tests.

The official kube-proxy cannot be downloaded on the test machines. This stand-in accepts
exactly the flags of the real kube-proxy of the pinned minor, requires --config (a
KubeProxyConfiguration), reads clientConnection.kubeconfig and refuses unreadable, mismatched
or wrongly signed client credentials. It reaches the API server with its client certificate
(GET /api/v1/nodes, verifying the server against the kubeconfig's CA) and serves plain HTTP
/healthz on healthzBindAddress (like the real one: 200 with lastUpdated/currentTime while the
API server answers, 503 when it has not for 60 s).
It does NOT program iptables or IPVS: Services do not work with this stand-in.
"""

# standin: strip-begin
import ssl
import time
from typing import Any

from tests.standins.common import (
    ApiClient,
    JSONHandler,
    Kubeconfig,
    bind,
    die,
    log,
    now_rfc3339,
    parse_args,
    read_yaml,
    run_main,
    serve_in_thread,
    split_hostport,
    status_obj,
    wait_for_apiserver,
)

# standin: strip-end

REQUIRED = ("config",)
STATE: dict[str, Any] = {"last_ok": 0.0, "last_ok_wall": ""}


class ProxyHealth(JSONHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/livez"):
            ok = time.monotonic() - STATE["last_ok"] < 60
            self.send_json(200 if ok else 503, {"lastUpdated": STATE["last_ok_wall"],
                                                "currentTime": now_rfc3339(),
                                                "nodeEligible": True})
        else:
            self.send_json(404, status_obj(404, "NotFound", f"{path}: not served by the "
                                           "kube-proxy stand-in"))


def main(argv: list[str]) -> int:
    flags = parse_args(argv, REQUIRED)
    cfg = read_yaml(flags["config"], "--config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "KubeProxyConfiguration":
        die(f"--config: {flags['config']} is not a KubeProxyConfiguration")
    mode = str(cfg.get("mode") or "iptables")
    if mode not in ("iptables", "ipvs", "nftables"):
        die(f"--config: unknown proxy mode {mode!r}")
    kubeconfig = str((cfg.get("clientConnection") or {}).get("kubeconfig") or
                     flags.get("kubeconfig") or "")
    if not kubeconfig:
        die("--config: clientConnection.kubeconfig is not set")
    kc = Kubeconfig(kubeconfig, "clientConnection.kubeconfig")
    api = ApiClient(kc)
    wait_for_apiserver(api, 60)
    status, body = api.request("GET", "/api/v1/nodes")
    if status != 200:
        die(f"the API server refused to list nodes for {kc.user}: {status} {body}")
    STATE["last_ok"], STATE["last_ok_wall"] = time.monotonic(), now_rfc3339()
    log(f"API server {kc.server} answers; mode {mode} (the stand-in programs no rules)")
    healthz = str(cfg.get("healthzBindAddress") or "0.0.0.0:10256")
    host, port = split_hostport(healthz, "healthzBindAddress")
    server = bind(host, port, ProxyHealth, None, "healthzBindAddress")
    serve_in_thread(server)
    log(f"serving HTTP /healthz on {host}:{port}")
    while True:
        time.sleep(10)
        try:
            status, _ = api.request("GET", "/api/v1/nodes")
            if status == 200:
                STATE["last_ok"], STATE["last_ok_wall"] = time.monotonic(), now_rfc3339()
            else:
                log(f"listing nodes answered {status}")
        except (OSError, ssl.SSLError) as exc:
            log(f"API server not reachable: {exc}")


if __name__ == "__main__":
    run_main(main)
