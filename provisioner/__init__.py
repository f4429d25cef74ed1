"""provisioner: declarative Kubernetes clusters (spec -> plan -> render -> execute -> verify)."""

__version__ = "0.1.0"
