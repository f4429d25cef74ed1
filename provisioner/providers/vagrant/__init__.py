"""The ``vagrant`` provider: VMs made by Vagrant (libvirt), from a box this project can build."""
