"""Action provisioner_pack_install: install files on a host as one root-owned tar.

Arguments:
  items:  a list of {src (controller file), dest (absolute host path), mode (octal string)};
  pack:   where the controller writes the tar (inside the 0700 state directory: a pack of
          rendered files may hold key material); written 0600, removed once sent.

The tar is written on the controller by this plugin (no module run, no Python started per
host), sent with the connection's put_file into the task's private remote temporary
directory (0700, so a secret is never readable by other users while it waits), and extracted
with one command (with become when the play uses it): members are named by their destination
without the leading slash, root-owned, with the item's mode; ``tar`` creates missing parent
directories root-owned 0755 and leaves existing ones alone, and replaces each file (unlink,
then create), so running binaries are not disturbed.

One task instead of three (pack with a delegated command, ``copy``, extract): those module
runs dominated the cold provision on 2 cores. Always reports changed (the caller runs it only
for stale items); the result names the installed paths only, never their content.
"""

from __future__ import annotations

import os
import shlex
import tarfile
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def write_pack(path: str, items: list[dict[str, Any]]) -> None:
    """The deterministic tar of ``items`` (sorted by destination, source mtimes)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                      format=tarfile.GNU_FORMAT) as tar:
            for item in sorted(items, key=lambda i: str(i["dest"])):
                info = tar.gettarinfo(str(item["src"]), arcname=str(item["dest"]).lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = int(str(item["mode"]), 8)
                with open(str(item["src"]), "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ActionModule(ActionBase):
    """Pack on the controller, send, extract: see the module docstring."""

    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("items", "pack"))
    # --check must not write to hosts: Ansible skips the task there.
    _supports_check_mode = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        items = self._task.args.get("items") or []
        pack = self._task.args.get("pack")
        if not isinstance(items, list) or not isinstance(pack, str) or not pack:
            raise AnsibleActionFail("provisioner_pack_install needs items (a list) and pack")
        if not items:
            result.update(changed=False, installed=[])
            return result
        for item in items:
            dest = str(item.get("dest", "")) if isinstance(item, dict) else ""
            if not dest.startswith("/") or ".." in dest.split("/"):
                raise AnsibleActionFail(f"provisioner_pack_install: bad destination {dest!r}")
        try:
            write_pack(pack, items)
        except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
            raise AnsibleActionFail(f"provisioner_pack_install: cannot pack: {exc}") from None
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, "pack.tar")
        try:
            self._transfer_file(pack, remote)
        finally:
            os.unlink(pack)  # it may hold key material: the controller keeps no copy
        self._fixup_perms2((tmpdir, remote), execute=False)
        q = shlex.quote(remote)
        script = (f"set -e; umask 022; tar -xpf {q} --numeric-owner --no-overwrite-dir -C /; "
                  f"rm -f {q}")
        # The temporary directory itself goes in ActionBase.cleanup, after the task.
        res = self._low_level_execute_command(f"/bin/sh -c {shlex.quote(script)}",
                                               sudoable=True)
        if res.get("rc", 1) != 0:
            err = (res.get("stderr") or res.get("stdout") or "").strip()[-2000:]
            raise AnsibleActionFail(f"extracting the pack failed (rc {res.get('rc')}): {err}")
        result.update(changed=True, installed=sorted(str(i["dest"]) for i in items))
        return result
