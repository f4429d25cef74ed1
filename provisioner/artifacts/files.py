"""File plumbing for artifacts: hashing, checksum files, atomic writes, reproducible tars.

Scope: small pure helpers with no knowledge of sources or the manifest. Tars are written
reproducibly (sorted, mtime 0, root-owned) so the same inputs always give the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from provisioner.artifacts.model import InstallItem

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# A digest is reused only while the file's size, mtime, ctime and inode are unchanged (git's
# index does the same): any write or chmod moves ctime, which no user call can set back.
# Files changed in the last two seconds are not cached, so a write racing the hash is not
# recorded under the new timestamps.
HASH_CACHE_SETTLE_NS = 2 * 10**9


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def sha256_file_cached(path: Path, cache_file: Path) -> str:
    """``sha256_file`` through the stat-keyed cache ``cache_file`` (0600 JSON, kept in the
    private state directory): the controller does not re-read a gigabyte of unchanged
    artifacts on every run, and a changed file is always hashed again."""
    key = str(path.resolve())
    st = path.stat()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, list) and len(entry) == 5 and entry[:4] == _stat_key(st):
        return str(entry[4])
    digest = sha256_file(path)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > HASH_CACHE_SETTLE_NS:
        cache[key] = [*_stat_key(st), digest]
        cache_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = temp_beside(cache_file)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(cache, sort_keys=True).encode())
        os.replace(tmp, cache_file)
    return digest


def sha256_stream(stream: IO[bytes]) -> str:
    """Hex sha256 of everything left in ``stream``."""
    h = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def parse_checksum_file(text: str, filename: str) -> str | None:
    """The sha256 for ``filename`` in a checksum file, or None.

    Accepts the shapes projects publish: a bare hash (dl.k8s.io ``.sha256``) and
    ``sha256sum`` lines ``<hash>  [*]<path>`` (etcd ``SHA256SUMS``, runc ``runc.sha256sum``,
    containerd ``.sha256sum``), matched on the file's base name.
    """
    bare: list[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or not _HEX64.match(tokens[0]):
            continue
        if len(tokens) == 1:
            bare.append(tokens[0].lower())
        elif tokens[-1].lstrip("*").rsplit("/", 1)[-1] == filename:
            return tokens[0].lower()
    return bare[0] if len(bare) == 1 else None


def record_path(path: Path) -> Path:
    """The ``.sha256`` record beside a cached or bundled file."""
    return path.with_name(path.name + ".sha256")


def record_text(sha256: str, filename: str) -> str:
    """A ``sha256sum``-compatible record line."""
    return f"{sha256}  {filename}\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    tmp = temp_beside(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def temp_beside(path: Path) -> Path:
    """A temp path in the same directory (so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.part.{os.getpid()}")


def write_tar(members: Iterable[tuple[str, Path]], out: Path) -> None:
    """Write an uncompressed, reproducible tar of ``(arcname, file)`` pairs to ``out``."""
    tmp = temp_beside(out)
    try:
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for arcname, src in sorted(members):
                info = tarfile.TarInfo(arcname)
                info.size = src.stat().st_size
                info.mode = 0o755 if os.access(src, os.X_OK) else 0o644
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                with src.open("rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def tar_info(name: str, mode: int, size: int = 0,
             kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A reproducible tar header: mtime 0, owned by root."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def new_parent_dirs(path: str, seen: set[str]) -> list[str]:
    """The parent directories of ``path`` not in ``seen`` yet (added to it), outermost first,
    so archives list each directory once before its contents."""
    parts = path.split("/")[:-1]
    out = []
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d and d != "." and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def tar_files(path: Path) -> dict[str, str]:
    """Regular files in the archive at ``path``: name without ``./`` -> name as stored."""
    with tarfile.open(path, "r:*") as tar:
        return {m.name.removeprefix("./"): m.name for m in tar.getmembers() if m.isfile()}


def resolve_members(
    path: Path, items: tuple[InstallItem, ...], files: dict[str, str] | None = None,
) -> tuple[tuple[InstallItem, ...], list[str]]:
    """``items`` with members spelled as the archive stores them, and the members it lacks
    (``files``: the archive's ``tar_files``, when the caller has them already)."""
    if files is None:
        files = tar_files(path)
    out: list[InstallItem] = []
    missing: list[str] = []
    for i in items:
        actual = files.get(i.member.removeprefix("./"))
        if actual is None:
            missing.append(i.member)
        else:
            out.append(InstallItem(actual, i.dest, i.mode))
    return tuple(out), missing


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination or is not a plain file."""


def safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract the regular files and directories of ``tar`` under ``dest``, refusing
    absolute paths, ``..``, links, devices and FIFOs; modes lose setuid, setgid and
    sticky bits and group/other write. Done by hand rather than with
    ``extractall(filter="data")``, which Debian 12's own Python (3.11.2) lacks."""
    root = dest.resolve()
    for m in tar.getmembers():
        name = m.name.removeprefix("./")
        parts = Path(name).parts
        if not name or name == ".":
            continue
        if Path(name).is_absolute() or ".." in parts:
            raise UnsafeArchiveError(f"member {m.name!r} leaves the destination")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"member {m.name!r} is not a regular file or directory")
        target = root.joinpath(*parts)
        if not str(target.resolve()).startswith(str(root) + os.sep):
            raise UnsafeArchiveError(f"member {m.name!r} leaves the destination")
        mode = m.mode & 0o755
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        if src is None:
            raise UnsafeArchiveError(f"member {m.name!r} has no data")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.chmod(target, mode or 0o644)
