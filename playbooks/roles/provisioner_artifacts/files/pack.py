"""Pack the stale binaries of one host into one tar on the controller (root-owned members).

Usage: pack.py OUT.tar ITEMS.json, where ITEMS is a list of {src, dest, mode}. Members are
named by their absolute destination (without the leading slash), so `tar -xpf OUT -C /` on
the host installs them all in one step: one transfer and one command instead of one `copy`
(three module runs) per file, which dominated the runtime phase, above all on emulated VMs.
The archive is deterministic (sorted, mtime of the source), so packing is idempotent.
"""

import json
import os
import sys
import tarfile


def main() -> None:
    out, items = sys.argv[1], json.loads(sys.argv[2])
    os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for item in sorted(items, key=lambda i: i["dest"]):
            info = tar.gettarinfo(item["src"], arcname=item["dest"].lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = int(str(item["mode"]), 8)
            with open(item["src"], "rb") as fh:
                tar.addfile(info, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
