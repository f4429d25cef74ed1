"""The plan: hosts, roles, components, PKI, artifacts and the ordered phase tree."""

from provisioner.plan.build import (
    PHASE_AFTER,
    PHASES,
    PhaseSelectionError,
    build_plan,
    phase_after,
    select_phases,
)
from provisioner.plan.model import Endpoints, HostPlan, Phase, Plan

__all__ = [
    "PHASES",
    "PHASE_AFTER",
    "Endpoints",
    "HostPlan",
    "Phase",
    "PhaseSelectionError",
    "Plan",
    "build_plan",
    "phase_after",
    "select_phases",
]
