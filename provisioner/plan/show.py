"""Human and machine views of a plan (``provisioner plan`` and ``--json``); deterministic."""

from __future__ import annotations

import json
from typing import Any

from provisioner.plan.model import Phase, Plan


def _phase_dict(p: Phase) -> dict[str, Any]:
    return {
        "name": p.name,
        "description": p.description,
        "hosts": list(p.hosts),
        "playbook": p.playbook,
        "children": [_phase_dict(c) for c in p.children],
    }


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data."""
    spec = plan.cluster.spec
    return {
        "cluster": plan.name,
        "kubernetesVersion": plan.version,
        "provider": spec.provider.type,
        "components": dict(sorted(plan.release.components.items())),
        "endpoints": {"nodes": plan.endpoints.node, "admin": plan.endpoints.admin,
                      "apiservers": [t for _, t in plan.endpoints.lb_backends]},
        "network": {"cni": spec.network.cni, "podCIDR": str(spec.network.pod_cidr),
                    "serviceCIDR": str(spec.network.service_cidr),
                    "kubernetesServiceIP": str(plan.kubernetes_service_ip),
                    "dnsServiceIP": str(plan.dns_service_ip),
                    "kubeProxyMode": spec.network.kube_proxy_mode},
        "hosts": [
            {
                "name": h.name,
                "address": str(h.address),
                "roles": sorted(r.value for r in h.machine.roles),
                "components": list(h.components),
                "artifacts": list(h.artifacts),
                "ports": list(h.ports),
                "podCIDR": str(h.pod_cidr) if h.pod_cidr is not None else None,
            }
            for h in plan.hosts
        ],
        "pki": {
            "cas": [{"name": c.name, "commonName": c.common_name} for c in plan.pki.cas],
            "certificates": [
                {"name": c.name, "ca": c.ca, "commonName": c.common_name,
                 "organizations": list(c.organizations), "dnsNames": list(c.dns_names),
                 "ipAddresses": list(c.ip_addresses), "server": c.server, "client": c.client}
                for c in plan.pki.certs
            ],
        },
        "addons": list(plan.addons),
        "phases": [_phase_dict(p) for p in plan.phases],
    }


def plan_json(plan: Plan) -> str:
    """``plan_dict`` as stable JSON."""
    return json.dumps(plan_dict(plan), indent=2, sort_keys=False) + "\n"


def plan_text(plan: Plan) -> str:
    """A readable summary: hosts and roles, endpoints, PKI, and the phase tree."""
    d = plan_dict(plan)
    lines = [
        f"Cluster {d['cluster']}: Kubernetes {d['kubernetesVersion']} on {d['provider']} "
        f"({len(plan.control_plane)} control plane, {len(plan.etcd)} etcd, "
        f"{len(plan.nodes) - len(plan.control_plane)} workers)",
        f"  apiserver for nodes: {d['endpoints']['nodes']}   admin: {d['endpoints']['admin']}",
        f"  network: {d['network']['cni']}, pods {d['network']['podCIDR']}, services "
        f"{d['network']['serviceCIDR']}, DNS {d['network']['dnsServiceIP']}, kube-proxy "
        f"{d['network']['kubeProxyMode']}",
        f"  addons: {', '.join(d['addons'])}",
        *(f"  {w}" for w in plan.warnings),
        "",
        "Hosts:",
    ]
    width = max(len(h["name"]) for h in d["hosts"])
    for h in d["hosts"]:
        roles = ",".join(r.replace("kube_", "") for r in h["roles"])
        pod = f"  pods {h['podCIDR']}" if h["podCIDR"] else ""
        lines.append(f"  {h['name']:<{width}}  {h['address']:<15} {roles:<26}"
                     f" {' '.join(h['components'])}{pod}")
    lines += ["", f"PKI: {len(d['pki']['cas'])} CAs, {len(d['pki']['certificates'])} "
              "certificates (kept in the state directory, never regenerated unless asked)"]
    api = next(c for c in d["pki"]["certificates"] if c["name"].startswith("apiserver/"))
    lines.append(f"  apiserver SANs (one pair per control-plane node; {api['name']}): "
                 f"{', '.join(api['dnsNames'] + api['ipAddresses'])}")
    lines += ["", "Phases (select with --only/--skip):"]

    def walk(p: dict[str, Any], depth: int) -> None:
        hosts = p["hosts"]
        where = ", ".join(hosts) if len(hosts) <= 4 else f"{len(hosts)} hosts"
        lines.append(f"  {'  ' * depth}{p['name']:<{40 - 2 * depth}} {where or '(no hosts)'}")
        for c in p["children"]:
            walk(c, depth + 1)

    for p in d["phases"]:
        walk(p, 0)
    return "\n".join(lines) + "\n"
