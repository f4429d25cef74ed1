"""Cluster components, in the order their files are rendered. Adding one: a module and an entry."""

from provisioner.components.addons import Addons
from provisioner.components.base import Component, File, Material
from provisioner.components.cni import CNIBridge, CNIFlannelPlugin, CNIPlugins
from provisioner.components.control_plane import (
    AdminKubeconfig,
    APIServer,
    ControllerManager,
    Scheduler,
)
from provisioner.components.etcd import Etcd
from provisioner.components.lb import Haproxy, Keepalived
from provisioner.components.node import Kubelet, KubeProxy
from provisioner.components.os import OSPrep
from provisioner.components.runtime import Containerd

ALL: tuple[Component, ...] = (
    OSPrep(),
    Containerd(),
    Etcd(),
    Haproxy(),
    Keepalived(),
    APIServer(),
    ControllerManager(),
    Scheduler(),
    AdminKubeconfig(),
    Kubelet(),
    KubeProxy(),
    CNIPlugins(),
    CNIFlannelPlugin(),
    CNIBridge(),
    Addons(),
)

__all__ = ["ALL", "Component", "File", "Material"]
