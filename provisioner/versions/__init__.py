"""Packaged data: supported Kubernetes versions, pinned component versions and per-version flags."""
