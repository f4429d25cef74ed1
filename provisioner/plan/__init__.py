"""The plan: hosts, roles, components, PKI, artifacts and the ordered phase tree."""

from provisioner.plan.build import PHASES, PhaseSelectionError, build_plan, select_phases
from provisioner.plan.model import Endpoints, HostPlan, Phase, Plan

__all__ = [
    "PHASES",
    "Endpoints",
    "HostPlan",
    "Phase",
    "PhaseSelectionError",
    "Plan",
    "build_plan",
    "select_phases",
]
