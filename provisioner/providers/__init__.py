"""Machine providers: bring up, list and tear down the machines a cluster spec asks for.

Scope: a provider owns machines and writes an inventory; nothing after it (plan, render,
execute, verify) depends on which provider made the hosts. Deliberately import-free so that
``python -m provisioner.providers.nspawn.supervisor`` starts fast; use
``provisioner.providers.registry.provider_for`` to get a provider for a spec.
"""
