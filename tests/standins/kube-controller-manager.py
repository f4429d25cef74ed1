"""STAND-IN for kube-controller-manager, used only by the lab tests.

The official kube-controller-manager cannot be downloaded on the test machines. This stand-in
accepts exactly the flags of the real kube-controller-manager of the pinned minor, requires
--kubeconfig, and refuses unreadable, mismatched or wrongly signed credentials (kubeconfig
client certificate, cluster-signing certificate/key pair, CA files, service-account key).
It reaches the API server with its client certificate (verifying the server against the
kubeconfig's CA), holds the leader-election Lease kube-system/kube-controller-manager (renewed
every 2 s, 15 s duration) when --leader-elect is true, and serves HTTPS /healthz on
--bind-address:--secure-port (10257). As leader it runs one controller, a reduced node
lifecycle controller: a Node whose kubelet has not posted status for --node-monitor-grace-period
(40 s) gets Ready=Unknown. No other controller runs (no service accounts, no endpoints, no
certificate signing).
"""

# standin: strip-begin
import time
from collections.abc import Callable

from tests.standins.common import (
    ApiClient,
    check_ca,
    check_pair,
    check_private_key,
    log,
    now_rfc3339,
    parse_args,
    parse_time,
    run_leader_elected,
    run_main,
)

# standin: strip-end

REQUIRED = ("kubeconfig",)


def grace_seconds(value: str) -> float:
    value = value.strip() or "40s"
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        return 40.0


def node_lifecycle(grace: float) -> Callable[[ApiClient], None]:
    def work(api: ApiClient) -> None:
        status, nodes = api.request("GET", "/api/v1/nodes")
        if status != 200 or not isinstance(nodes, dict):
            return
        for node in nodes.get("items") or []:
            conds = (node.get("status") or {}).get("conditions") or []
            for c in conds:
                if c.get("type") != "Ready" or c.get("status") == "Unknown":
                    continue
                if time.time() - parse_time(str(c.get("lastHeartbeatTime") or "")) > grace:
                    c.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                              "message": "Kubelet stopped posting node status.",
                              "lastTransitionTime": now_rfc3339()})
                    name = node["metadata"]["name"]
                    code, _ = api.request("PUT", f"/api/v1/nodes/{name}/status", node)
                    log(f"node {name}: no status for {grace:.0f}s, Ready=Unknown ({code})")
    return work


def main(argv: list[str]) -> int:
    flags = parse_args(argv, REQUIRED)
    for flag in ("client-ca-file", "requestheader-client-ca-file", "root-ca-file"):
        if flags.get(flag):
            check_ca(flags[flag], f"--{flag}")
    if flags.get("cluster-signing-cert-file") or flags.get("cluster-signing-key-file"):
        check_pair(flags.get("cluster-signing-cert-file", ""),
                   flags.get("cluster-signing-key-file", ""),
                   "--cluster-signing-cert-file/--cluster-signing-key-file")
    if flags.get("service-account-private-key-file"):
        check_private_key(flags["service-account-private-key-file"],
                          "--service-account-private-key-file")
    work = node_lifecycle(grace_seconds(flags.get("node-monitor-grace-period", "40s")))
    return run_leader_elected(flags, "kube-controller-manager", 10257, work)


if __name__ == "__main__":
    run_main(main)
