"""The ``nspawn`` provider: systemd-nspawn machines with real systemd on one Linux host.

Scope: host preparation (``host``), the cached base image (``image``), one node's root
filesystem, cgroups and processes (``node``, ``supervisor``) and orchestration
(``provider``). Import-free for the same reason as the parent package.
"""
