"""The commented example spec that ``provisioner init`` writes (tested to validate)."""

EXAMPLE = """\
# A provisioner cluster spec. Validate it with `provisioner validate cluster.yaml`,
# see what would be done with `provisioner plan cluster.yaml`, and the full reference
# (every field, default and choice) with `provisioner schema`.
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata:
  name: demo                     # short DNS label; prefixes generated machine names
spec:
  kubernetesVersion: "1.37.2"    # `provisioner versions` lists the supported ones
  provider:
    type: nspawn                 # nspawn (local machines) | vagrant | static (your hosts)
    subnet: 192.168.56.0/24      # machines get .11, .12, ... ; the host bridge takes .1
  controlPlane:
    count: 3                     # 1, 3 or 5: one leader and standbys, etcd stacked on them
  workers:
    count: 2
  etcd:
    placement: controlPlane      # or `dedicated` with its own count/hosts
  containerRuntime:
    name: containerd
    ociRuntime: runc             # the one OCI runtime offered
  network:
    cni: bridge                  # bridge | flannel
    podCIDR: 10.244.0.0/16
    serviceCIDR: 10.96.0.0/12
    clusterDomain: cluster.local
    kubeProxyMode: iptables      # ipvs needs IPVS in the hosts' kernel
  dns:
    nodeLocalDNS:
      enabled: false
  addons:
    metricsServer: {enabled: true}
    dashboard: {enabled: false}
    logging: {enabled: false}
  registries:
    mirrors:                     # pull docker.io images through your registry
      - registry: docker.io
        endpoints: ["https://hub.test.com"]
    private:
      - host: hub.test.com       # add caFile, username and passwordFile if it needs them
  loadBalancer:
    mode: localHaproxy           # haproxy on every node; or `vip` (keepalived) or `external`
    port: 8443
  artifacts:
    source: online               # online | mirror (mirrorURL) | local (path: dir or bundle)
"""
