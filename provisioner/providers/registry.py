"""Choosing the provider for a spec.

Scope: map ``spec.provider.type`` to a provider implementation. Imports are local so that
asking for one provider does not load the others.
"""

from __future__ import annotations

from provisioner.providers.base import MachineProvider, ProviderError, Reporter, quiet
from provisioner.spec.models import Cluster, NspawnProvider, VagrantProvider


def provider_for(cluster: Cluster, report: Reporter = quiet) -> MachineProvider:
    """The provider that makes the machines of ``cluster``."""
    if isinstance(cluster.spec.provider, NspawnProvider):
        from provisioner.providers.nspawn.provider import NspawnMachines

        return NspawnMachines(cluster, report)
    if isinstance(cluster.spec.provider, VagrantProvider):
        from provisioner.providers.vagrant.provider import VagrantMachines

        return VagrantMachines(cluster, report)
    raise ProviderError(
        f"provider {cluster.spec.provider.type!r} does not make machines: the hosts in "
        "spec.hosts already exist (static)"
    )
