"""Systemd unit files for components that run from release binaries."""

from __future__ import annotations

from provisioner.components.base import CONFIG_MODE, File, flags_text
from provisioner.render.engine import render_template


def unit_file(
    cluster_name: str,
    unit: str,
    description: str,
    documentation: str,
    exec_path: str,
    flags: list[tuple[str, str | None]],
    after: tuple[str, ...] = ("network-online.target",),
    wants: tuple[str, ...] = ("network-online.target",),
    requires: tuple[str, ...] = (),
    service_type: str = "simple",
    environment: tuple[str, ...] = (),
    limit_nofile: int | None = 65536,
    extra_service: tuple[str, ...] = (),
    restart_sec: int = 5,
) -> File:
    """``/etc/systemd/system/<unit>.service`` running ``exec_path`` with ``flags``."""
    text = render_template(
        "systemd/service.j2",
        {
            "cluster_name": cluster_name,
            "description": description,
            "documentation": documentation,
            "after": after,
            "wants": wants,
            "requires": requires,
            "service_type": service_type,
            "environment": environment,
            "exec": exec_path,
            "args": flags_text(flags),
            "limit_nofile": limit_nofile,
            "extra_service": extra_service,
            "restart_sec": restart_sec,
        },
    )
    return File(f"/etc/systemd/system/{unit}.service", text.encode(), CONFIG_MODE, False, (unit,))
