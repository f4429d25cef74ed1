"""The typed cluster spec: models, loading, cross-field rules and resolved machines."""

from provisioner.spec.errors import SpecError, SpecIssue
from provisioner.spec.load import load_file, parse
from provisioner.spec.models import API_VERSION, Cluster
from provisioner.spec.topology import Machine, Role, machines

__all__ = [
    "API_VERSION",
    "Cluster",
    "Machine",
    "Role",
    "SpecError",
    "SpecIssue",
    "load_file",
    "machines",
    "parse",
]
