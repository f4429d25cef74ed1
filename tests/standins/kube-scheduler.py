"""STAND-IN for kube-scheduler, used only by the lab tests.

The official kube-scheduler cannot be downloaded on the test machines. This stand-in accepts
exactly the flags of the real kube-scheduler of the pinned minor, requires --kubeconfig, and
refuses unreadable, mismatched or wrongly signed client credentials. It reaches the API server
with its client certificate (verifying the server against the kubeconfig's CA), holds the
leader-election Lease kube-system/kube-scheduler (renewed every 2 s, 15 s duration) when
--leader-elect is true, and serves HTTPS /healthz on --bind-address:--secure-port (10259).
It schedules nothing: there are no pods in the stand-in API.
"""

# standin: strip-begin
from tests.standins.common import parse_args, run_leader_elected, run_main

# standin: strip-end

REQUIRED = ("kubeconfig",)


def main(argv: list[str]) -> int:
    flags = parse_args(argv, REQUIRED)
    return run_leader_elected(flags, "kube-scheduler", 10259)


if __name__ == "__main__":
    run_main(main)
